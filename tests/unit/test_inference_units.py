"""Pure parts of the inference service: wire codec, topology validation/indexing, the topology
store's versions, model loading checks, the reference model against tecore, and the stub build."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tecore import link_loads
from tellm.contract.codec import get_array, register_request, set_packed
from tellm.inference.errors import FailedPrecondition, InvalidArgument
from tellm.inference.session import ModelError, load_model
from tellm.inference.reference_model import write_equal_split_model
from tellm.inference.topologies import TopologyStore, build_topology
from tellm.contract.v1 import traffic_engineering_service_pb2 as pb

from .. import ROOT
from ..inference_support import paths_for, ring_topology


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=200))
def test_packed_varints_match_protobuf(values):
    fast, slow = pb.CandidatePaths(), pb.CandidatePaths()
    set_packed(fast, "path_link_ids", np.array(values, dtype=np.int64))
    slow.path_link_ids.extend(values)
    assert fast.SerializeToString() == slow.SerializeToString()
    decoded = pb.CandidatePaths.FromString(fast.SerializeToString())
    assert get_array(decoded, "path_link_ids", np.int64).tolist() == values


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), max_size=100))
def test_packed_floats_match_protobuf(values):
    fast, slow = pb.RouteResponse(mlu=1.5), pb.RouteResponse(mlu=1.5)
    set_packed(fast, "split", np.array(values, dtype=np.float32))
    slow.split.extend(values)
    assert fast.SerializeToString() == slow.SerializeToString()


def test_register_request_round_trip_matches_tecore():
    topo = ring_topology(6, chords=2)
    paths = paths_for(topo, k=3)
    req = pb.RegisterTopologyRequest.FromString(register_request(topo, paths, "x").SerializeToString())
    links = req.links
    arrays = build_topology(
        req.node_names, [lk.src_node for lk in links], [lk.dst_node for lk in links],
        [lk.capacity_bps for lk in links], [lk.latency_seconds for lk in links], req.paths.pair_src_nodes,
        req.paths.pair_dst_nodes, req.paths.pair_path_counts, req.paths.path_link_counts, req.paths.path_link_ids)
    assert (arrays.num_nodes, arrays.num_links, arrays.num_pairs, arrays.num_paths) == (
        topo.num_nodes, topo.num_links, paths.num_pairs, paths.num_paths)
    np.testing.assert_array_equal(arrays.path_pair, paths.path_pair)
    coo = paths.incidence.tocoo()
    got = sorted(zip(arrays.inc_path.tolist(), arrays.inc_link.tolist()))
    assert got == sorted(zip(coo.row.tolist(), coo.col.tolist()))
    np.testing.assert_allclose(arrays.capacity_bps, topo.capacity_bps.astype(np.float32))


def _arrays(**override):
    # Triangle 0-1-2 with both directions; pairs (0,1) and (0,2), two paths each.
    base = dict(node_names=["a", "b", "c"], link_src=[0, 1, 1, 2, 0, 2], link_dst=[1, 0, 2, 1, 2, 0],
                capacity_bps=[1e9] * 6, latency_seconds=[1e-3] * 6, pair_src=[0, 0], pair_dst=[1, 2],
                pair_path_counts=[2, 2], path_link_counts=[1, 2, 1, 2], path_link_ids=[0, 4, 3, 4, 0, 2])
    base.update(override)
    return build_topology(**base)


@pytest.mark.parametrize("override, field", [
    (dict(node_names=[]), "node_names"),
    (dict(node_names=["a", "a", "c"]), "node_names"),
    (dict(link_src=[], link_dst=[], capacity_bps=[], latency_seconds=[]), "links"),
    (dict(capacity_bps=[1e9, 1e9, np.nan, 1e9, 1e9, 1e9]), "links[2].capacity_bps"),
    (dict(link_dst=[1, 1, 2, 1, 2, 0]), "links[1]"),
    (dict(pair_src=[], pair_dst=[], pair_path_counts=[]), "paths.pair_src_nodes"),
    (dict(pair_dst=[1, 1]), "paths.pair_src_nodes"),
    (dict(pair_dst=[1, 5]), "paths.pair_dst_nodes[1]"),
    (dict(path_link_ids=[0, 4, 3, 4, 0, 9]), "paths.path_link_ids[5]"),
    (dict(path_link_ids=[0, 4, 3, 4, 0]), "paths.path_link_ids"),
    (dict(path_link_ids=[1, 4, 3, 4, 0, 2]), "paths.path_link_ids"),
    (dict(path_link_counts=[1, 2, 1]), "paths.path_link_counts"),
])
def test_build_topology_names_the_bad_field(override, field):
    with pytest.raises(InvalidArgument) as err:
        _arrays(**override)
    assert err.value.field == field, str(err.value)


def test_store_versions_and_eviction():
    store = TopologyStore(max_topologies=2)
    a = _arrays()
    reg, changed = store.register("t", a)
    assert (reg.version, changed) == (1, True)
    assert store.register("t", _arrays()) [0].version == 1
    reg2, changed = store.register("t", _arrays(capacity_bps=[2e9] * 6))
    assert (reg2.version, changed) == (2, True)
    assert store.get("t", 2) is reg2
    with pytest.raises(FailedPrecondition, match="stale"):
        store.get("t", 1)
    store.register("u", a)
    store.register("v", a)  # evicts "t", the least recently registered
    with pytest.raises(FailedPrecondition, match="not registered"):
        store.get("t", 2)
    with pytest.raises(InvalidArgument, match="topology_id"):
        store.get("", 1)


def test_reference_model_matches_tecore(tmp_path):
    model = load_model(write_equal_split_model(tmp_path / "m.onnx"), provider="cpu")
    assert model.provider == "CPUExecutionProvider" and model.policy_dim == 4
    topo = ring_topology(8, chords=3)
    paths = paths_for(topo, k=4)
    demand = np.random.default_rng(0).uniform(0, 1e9, paths.num_pairs)
    coo = paths.incidence.tocoo()
    out = model.run({"demand_bps": demand.astype(np.float32), "capacity_bps": topo.capacity_bps.astype(np.float32),
                     "latency_seconds": topo.latency_seconds.astype(np.float32),
                     "link_up": np.ones(topo.num_links, np.float32), "path_pair": paths.path_pair,
                     "inc_path": coo.row.astype(np.int64), "inc_link": coo.col.astype(np.int64),
                     "policy": np.zeros(4, np.float32)})
    expected_split = 1.0 / paths.paths_per_pair[paths.path_pair]
    np.testing.assert_allclose(out["split"], expected_split, rtol=1e-6)
    loads = link_loads(paths, expected_split, demand)
    np.testing.assert_allclose(out["link_load_bps"], loads, rtol=1e-5)
    assert float(out["mlu"][0]) == pytest.approx(float((loads / topo.capacity_bps).max()), rel=1e-5)


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="CUDAExecutionProvider"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("this machine has CUDA")
        load_model(write_equal_split_model(tmp_path / "m.onnx"), provider="cuda")


def test_wheel_build_generates_stubs(tmp_path):
    """The build (setup.py's build_py) generates the gRPC stubs; the wheel carries them."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "*_pb2*.py", "*.pyi", "__pycache__", "build",
                                                             "*.egg-info", ".hypothesis", ".pytest_cache",
                                                             "benchmarks", "tests", ".cache", "out"))
    assert not list((src / "contract" / "v1").glob("*_pb2*.py"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("tellm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for stub in ("traffic_engineering_service_pb2.py", "traffic_engineering_service_pb2_grpc.py"):
        assert f"tellm/contract/v1/{stub}" in names
