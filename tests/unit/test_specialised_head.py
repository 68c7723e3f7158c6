"""The head specialised per topology computes the shipped graph's function; same-topology batching."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tecore import compute_paths, load_topology
from tellm.inference.artifacts import DEFAULT_MODEL_PATH
from tellm.inference.batcher import Batcher
from tellm.contract.onnx_io import onnx_inputs
from tellm.inference.session import load_model
from tellm.inference.specialise import FoldedWeights, build_specialised
from tellm.inference.specialise_tables import _hop_buckets, build_tables
from tellm.inference.topologies import build_topology
from tellm.inference.topology_head import TopologyHead, graph_size, pad_rows

from ..inference_support import demands, paths_for, ring_topology


@pytest.fixture(scope="module")
def generic():
    return load_model(DEFAULT_MODEL_PATH, provider="cpu")


@pytest.fixture(scope="module")
def weights():
    return FoldedWeights.from_onnx(onnx.load(str(DEFAULT_MODEL_PATH)))


def _register(topo, paths):
    return build_topology(topo.nodes, topo.src, topo.dst, topo.capacity_bps, topo.latency_seconds,
                          paths.pairs[:, 0], paths.pairs[:, 1], np.diff(paths.pair_ptr), np.diff(paths.path_ptr),
                          paths.path_links, name=topo.name)


def _cases(data_dir):
    ring = ring_topology(7, chords=2, seed=3)  # pairs with 1 to 3 candidates: uneven K
    abilene = load_topology("Abilene")
    return [(ring, paths_for(ring, k=3)), (abilene, compute_paths(abilene, k=4))]


@pytest.mark.parametrize("layout", ["dense", "csr", "bucketed"])
def test_specialised_equals_generic_with_a_link_down_and_a_policy(generic, weights, data_dir, layout):
    for topo, paths in _cases(data_dir):
        arrays = _register(topo, paths)
        head = TopologyHead.build(weights, arrays, "cpu", threads=1, layout=layout)
        rng = np.random.default_rng(5)
        rows = []
        for i in range(3):  # all up / busiest link down / a random link down, three policies
            up = np.ones(topo.num_links, np.float32)
            if i:
                up[int(np.argmax(np.bincount(paths.path_links))) if i == 1 else int(rng.integers(topo.num_links))] = 0
            pol = np.float32([[0, 0, 0, 0], [0.5, 0, 0, 0], [0.2, 0.3, 0, 0]][i])
            rows.append((demands(paths, seed=i), up, pol))
        batch = head.run(*(np.stack(x) for x in zip(*rows)))
        for i, (d, up, pol) in enumerate(rows):
            ref = generic.route(onnx_inputs(topo, paths, d, link_up=up, policy=pol))
            one = head.run(d[None], up[None], pol[None])
            for out in (one, {k: v[i:i + 1] for k, v in batch.items()}):
                split = out["split"][0]
                assert np.abs(split - ref.split).max() < 1e-4
                assert abs(float(out["mlu"][0]) - ref.mlu) <= 1e-5 * max(ref.mlu, 1e-6)
                np.testing.assert_allclose(out["link_load_bps"][0] / arrays.capacity_bps,
                                           ref.link_load_bps / arrays.capacity_bps, atol=1e-5)
                assert np.isfinite(split).all() and (split >= 0).all()
                np.testing.assert_allclose(np.bincount(paths.path_pair, split), 1.0, atol=1e-5)


def test_batcher_groups_concurrent_calls_and_routes_answers():
    batcher = Batcher()
    sizes, gate = [], threading.Event()

    def run_batch(calls):
        sizes.append(len(calls))
        if len(sizes) == 1:
            gate.wait(5)  # hold the first run so that the others queue behind it
        return [c[0] * 10 for c in calls]

    results = {}

    def call(i):
        results[i] = batcher.submit("t", (i,), run_batch, max_batch=8)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(13)]
    threads[0].start()
    time.sleep(0.2)
    for t in threads[1:]:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(10)
    assert results == {i: i * 10 for i in range(13)}
    assert sizes[0] == 1 and max(sizes) == 8 and sum(sizes) == 13  # 1 alone, then 8 + 4 queued


def test_batcher_passes_errors_to_every_caller_of_the_batch():
    def boom(calls):
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        Batcher().submit("t", (1,), boom, max_batch=4)


def test_hop_buckets_trade_padding_for_nodes():
    counts = np.bincount([1] * 5 + [2] * 1000 + [3] * 1000 + [9] * 2)  # slots by hop count
    assert _hop_buckets(counts, 0).tolist() == [1, 2, 3, 9]  # free buckets: no padding at all
    assert _hop_buckets(counts, 10 ** 9).tolist() == [9]  # costly buckets: one, padded to 9 hops
    assert _hop_buckets(counts, 100).tolist() == [2, 3, 9]  # the five 1-hop slots pad to 2 rather than pay a bucket


def test_one_bucket_per_hop_count_computes_the_same(weights, data_dir):
    for topo, paths in _cases(data_dir):
        arrays = _register(topo, paths)
        args = (arrays.capacity_bps, arrays.latency_seconds, arrays.path_pair, arrays.inc_path, arrays.inc_link,
                arrays.num_pairs)
        csr, split = build_tables(*args, layout="csr"), build_tables(*args, layout="bucketed", bucket_rows=0)
        assert sum(n.startswith("t_bucket") for n in split.arrays) == len(np.unique(np.diff(paths.path_ptr))) > 1
        d, up, pol = demands(paths, seed=3)[None], np.ones((1, topo.num_links), np.float32), np.float32([[0.2, 0.3, 0, 0]])
        up[0, int(np.argmax(np.bincount(paths.path_links)))] = 0
        outs = []
        for t in (csr, split):
            sess = ort.InferenceSession(build_specialised(weights, t).SerializeToString(),
                                        providers=["CPUExecutionProvider"])
            outs.append(sess.run(None, dict(t.arrays, demand_bps=d, link_up=up, policy=pol)))
        for a, b in zip(*outs):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_batch_runs_in_the_smallest_captured_size_padded_with_its_first_row():
    captured = (1, 2, 4, 8, 16, 32)
    assert [graph_size(n, captured) for n in (1, 2, 3, 5, 8, 17, 32, 33)] == [1, 2, 4, 8, 8, 32, 32, None]
    assert graph_size(3, (1,)) is None  # memory-bound topologies capture batches of one only
    feeds = {"demand_bps": np.arange(6, dtype=np.float32).reshape(3, 2), "policy": np.eye(3, 4, dtype=np.float32)}
    padded = pad_rows(feeds, 8)
    assert all(a.shape[0] == 8 for a in padded.values())
    np.testing.assert_array_equal(padded["demand_bps"][:3], feeds["demand_bps"])
    np.testing.assert_array_equal(padded["demand_bps"][3:], np.repeat(feeds["demand_bps"][:1], 5, axis=0))
    assert pad_rows(feeds, 3)["policy"] is feeds["policy"]


@pytest.mark.parametrize("layout", ["dense", "csr", "bucketed"])
def test_a_half_precision_mlp_keeps_the_mlu_and_valid_splits(weights, data_dir, layout):
    """float16 refinement MLP (what ``auto`` serves on CUDA for large topologies) against float32: the
    MLU within 1e-4 relative with a link down and a policy, every split valid; ``auto`` is float32 on a CPU."""
    topo = load_topology("Abilene")
    paths = compute_paths(topo, k=4)
    arrays = _register(topo, paths)
    full = TopologyHead.build(weights, arrays, "cpu", threads=1, layout=layout)
    half = TopologyHead.build(weights, arrays, "cpu", threads=1, layout=layout, mlp_dtype="float16")
    assert (full.mlp_dtype, half.mlp_dtype) == ("float32", "float16")
    up = np.ones((3, topo.num_links), np.float32)
    up[1, int(np.argmax(np.bincount(paths.path_links)))] = 0
    d = np.stack([demands(paths, seed=s) for s in range(3)])
    pol = np.float32([[0, 0, 0, 0], [0.5, 0, 0, 0], [0.2, 0.3, 0, 0]])
    a, b = full.run(d, up, pol), half.run(d, up, pol)
    np.testing.assert_allclose(b["mlu"], a["mlu"], rtol=1e-4)
    assert np.abs(b["split"] - a["split"]).max() > 0  # the half-precision graph really is another graph
    assert np.isfinite(b["split"]).all() and (b["split"] >= 0).all()
    for row in b["split"]:
        np.testing.assert_allclose(np.bincount(paths.path_pair, row), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="mlp_dtype"):
        build_specialised(weights, full.tables, "bfloat16")


@pytest.mark.parametrize("layout", ["dense", "csr", "bucketed"])
def test_cpu_graph_shapes_its_scalar_constants_to_the_tensors_they_meet(weights, data_dir, layout):
    """The CPU head's graph pass: every rewired constant has its partner's rank, the MLP's GELU
    constants stay scalars (ORT fuses them), and the outputs are the same bits as without the pass."""
    from onnx import numpy_helper

    from tellm.inference.graph_passes import _shapes, rank_matched_scalars

    topo = load_topology("Abilene")
    paths = compute_paths(topo, k=4)
    arrays = _register(topo, paths)
    t = build_tables(arrays.capacity_bps, arrays.latency_seconds, arrays.path_pair, arrays.inc_path,
                     arrays.inc_link, arrays.num_pairs, layout)
    plain, passed = build_specialised(weights, t), build_specialised(weights, t)
    rewired = rank_matched_scalars(passed)
    assert rewired > 100  # dozens per round: clamps, steps, the softmax sharpness
    inits = {i.name: numpy_helper.to_array(i) for i in passed.graph.initializer}
    shapes = _shapes(passed)
    for node in passed.graph.node:
        for name in node.input:
            if name.endswith(tuple(f"_rank{r}" for r in range(2, 6))):
                partner = next(shapes[i] for i in node.input if i in shapes)
                assert inits[name].shape == (1,) * len(partner) and partner[-1] == 1
    erf_inputs = [n.input[0] for n in passed.graph.node if n.op_type == "Erf"]
    divs = [n for n in passed.graph.node if n.op_type == "Div" and n.output[0] in erf_inputs]
    assert divs and all(inits[n.input[1]].shape == () for n in divs)  # GELU's constant untouched
    d, up, pol = demands(paths, seed=4)[None], np.ones((1, topo.num_links), np.float32), np.float32([[0.2, 0.3, 0, 0]])
    up[0, 3] = 0
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, dict(t.arrays, demand_bps=d, link_up=up, policy=pol)) for m in (plain, passed)]
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
