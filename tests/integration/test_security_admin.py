"""Guarded admin calls and bounded state, against a real `tellm serve` subprocess: ReloadModel only
reads regular files inside --model-dir (one generic refusal, quick, audited, Route unaffected),
SetPolicy is rate limited per topology and audited, float32 overflow and raw policy vectors outside
the policy bounds are INVALID_ARGUMENT, a model returning invalid splits is never answered as OK,
and the topology store is capped in bytes, evicting the least recently used."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from ..inference_support import demands, model_under_test, other_model, paths_for, ring_topology
from ..security_support import Serve

from tecore import Topology
from tellm.contract.client import InferenceClient, InferenceError, InferenceRejected, StaleTopology
from tellm.contract.policies import make_policy
from tellm.contract.policy_client import PolicyClient, PolicyServiceError
from tellm.policy.service import PolicyStore


@pytest.fixture(scope="module")
def net():
    topo = ring_topology(6, chords=2, seed=3)
    return topo, paths_for(topo, k=3)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("admin")
    model_dir = root / "models"
    model, _ = model_under_test(model_dir)
    s = Serve(root, "--model", str(model), "--model-dir", str(model_dir), "--max-model-bytes", str(4 << 20),
              "--audit-log", str(root / "audit.jsonl"), "--policy-max-changes", "5",
              "--policy-state", str(root / "policy.state"))
    s.root, s.model_dir, s.model, s.audit = root, model_dir, model, root / "audit.jsonl"
    yield s
    s.stop()


def _audit(served, method: str) -> list[dict]:
    return [e for e in map(json.loads, served.audit.read_text().splitlines()) if e["method"] == method]


def test_reload_refusals_are_generic_quick_audited_and_route_keeps_answering(served, net, tmp_path):
    d = served.model_dir
    fifo = d / "fifo.onnx"
    os.mkfifo(fifo)
    (d / "zero.onnx").symlink_to("/dev/zero")
    (d / "escape.onnx").symlink_to("/etc/passwd")
    (d / "big.onnx").write_bytes(os.urandom(5 << 20))  # over --max-model-bytes
    outside = other_model(served.root / "elsewhere")
    refused = [str(fifo), "zero.onnx", "/dev/zero", "escape.onnx", "/etc/shadow", "/etc/passwd",
               str(outside), "../elsewhere/other.onnx", "missing.onnx", str(d / "big.onnx"), str(d)]
    client = InferenceClient(served.address, timeout_seconds=10, retries=0)
    topo, paths = net
    h = client.register_topology(topo, paths, topology_id="reload-probe")
    demand = demands(paths)
    stop, route_errors, routes = threading.Event(), [], [0]

    def keep_routing():
        # A generous deadline: a loaded 2-core box can take seconds over a model swap, while a
        # reload that blocked the service (a FIFO opened without a guard) would hold it forever.
        c = InferenceClient(served.address, timeout_seconds=20, retries=0)
        while not stop.is_set():
            try:
                c.route(h, demand)
                routes[0] += 1
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                route_errors.append(exc)
        c.close()

    router = threading.Thread(target=keep_routing)
    router.start()
    try:
        messages = set()
        for path in refused:
            t0 = time.monotonic()
            with pytest.raises(InferenceRejected) as err:
                client.reload_model(path)
            assert time.monotonic() - t0 < 10, path
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, (path, err.value)
            messages.add(err.value.message)
        assert len(messages) == 1, messages  # no oracle: the same answer whatever the reason
        assert messages.pop().startswith("model_path: not an allowed model file")

        # The old denial of service: eight FIFO reloads at once. Each is refused (or told a load is running).
        def fifo_reload(_):
            try:
                client.reload_model(str(fifo))
            except InferenceError as exc:
                return exc.code
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(fifo_reload, range(8)))
        assert set(codes) <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE}
        assert client.health() and client.model_info().version

        # A regular model file inside the directory still reloads.
        other = other_model(d, "swap.onnx")
        info, changed = client.reload_model("swap.onnx")
        assert changed and info.path == str(other.resolve())
        info, changed = client.reload_model(str(served.model))
        assert changed
    finally:
        stop.set()
        router.join(30)
        client.close()
    assert not route_errors, route_errors[:3]
    assert routes[0] > 0

    entries = _audit(served, "ReloadModel")
    results = {e["what"]["model_path"]: e["result"] for e in entries}
    for path in refused:
        assert results[path].startswith("refused: "), (path, results[path])
    assert "outside the model directory" in results["/etc/shadow"]
    assert "outside the model directory" in results["/dev/zero"] and "outside" in results["escape.onnx"]
    assert "not a regular file" in results[str(fifo)] and "not a regular file" in results[str(d)]
    assert "more than" in results[str(d / "big.onnx")]
    assert results["swap.onnx"].startswith("ok: version")
    assert all(e["who"].startswith("peer:ipv4:127.0.0.1") for e in entries)
    assert "admin call ReloadModel" in served.log_text()  # also in the server log at default verbosity


def test_devices_and_fifos_are_never_read(tmp_path):
    from tellm.inference.modelfile import UnsafeModelFile, read_capped

    os.mkfifo(tmp_path / "fifo")
    for path in ("/dev/zero", tmp_path / "fifo", tmp_path):
        with pytest.raises(UnsafeModelFile, match="not a regular file"):
            read_capped(path, 1 << 20)


def test_set_policy_storm_is_rate_limited_and_audited(served):
    clients = [PolicyClient(served.address, timeout_seconds=5) for _ in range(4)]
    policies = [make_policy("headroom", {"fraction": 0.3}), make_policy("latency_aware", {"weight": 0.6})]
    outcomes: list[str] = []
    lock = threading.Lock()

    def storm(i):
        for j in range(50):
            try:
                clients[i].set_policy(policies[j % 2], topology_id="storm", reason=f"storm {i}/{j}", actor="test")
                out = "OK"
            except PolicyServiceError as exc:
                out = exc.code.name
            with lock:
                outcomes.append(out)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(storm, range(4)))
    assert len(outcomes) == 200
    assert outcomes.count("OK") == 5 and outcomes.count("RESOURCE_EXHAUSTED") == 195
    # Another topology has its own budget; bounds and sizes are refused (and audited) whatever the budget.
    clients[0].set_policy(policies[0], topology_id="calm", reason="ok")
    with pytest.raises(PolicyServiceError) as err:
        clients[0].set_policy(policies[0], topology_id="calm", reason="x" * 5000)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "reason" in str(err.value)
    for c in clients:
        c.close()

    entries = [e for e in _audit(served, "SetPolicy") if e["what"]["topology_id"] == "storm"]
    assert len(entries) == 200
    assert sum(e["result"].startswith("ok:") for e in entries) == 5
    assert sum("rate limit" in e["result"] for e in entries) == 195
    long_reason = [e for e in _audit(served, "SetPolicy") if e["what"]["topology_id"] == "calm"][-1]
    assert long_reason["result"].startswith("refused:") and len(long_reason["what"]["reason"]) < 300
    assert served.log_text().count("admin call SetPolicy") >= 202
    # The journal holds the last accepted change.
    restored = PolicyStore(served.root / "policy.state").get("storm")
    assert restored.version == 5


def test_policy_journal_is_compacted_and_history_bounded(tmp_path):
    state = tmp_path / "p.state"
    store = PolicyStore(state)
    for i in range(500):
        store.set("t", make_policy("headroom", {"fraction": (i % 50) / 100}), reason=str(i))
    assert len(state.read_text().splitlines()) <= 2 * 1 + 64 + 1
    assert len(store._entries["t"].history) == 32
    again = PolicyStore(state)
    assert again.get("t").version == 500 and again.get("t").policy == store.get("t").policy
    with state.open("a") as f:
        f.write('{"topology_id": "t", "vers')  # a torn last line (crash mid-write) is skipped
    assert PolicyStore(state).get("t").version == 500


def test_float32_overflow_and_raw_policy_bounds_are_invalid_argument(served, net):
    topo, paths = net
    client = InferenceClient(served.address, timeout_seconds=10, retries=0)
    try:
        huge = Topology(topo.name, topo.nodes, topo.src, topo.dst, np.full(topo.num_links, 1e39), topo.weight,
                        topo.latency_seconds)
        with pytest.raises(InferenceRejected) as err:
            client.register_topology(huge, paths, topology_id="huge")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "float32" in err.value.message
        assert err.value.message.startswith("links[0].capacity_bps")

        tiny = Topology(topo.name, topo.nodes, topo.src, topo.dst, np.full(topo.num_links, 1.0), topo.weight,
                        topo.latency_seconds)
        h = client.register_topology(tiny, paths, topology_id="tiny")
        with pytest.raises(InferenceRejected) as err:
            client.route(h, np.full(paths.num_pairs, 3e38, np.float32))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.message.startswith("demand_bps")

        h = client.register_topology(topo, paths, topology_id="bounds")
        d = demands(paths)
        for vec, text in (([100, -5, 0, 0], "[0] = 100 is outside [0, 1]"), ([0, 0.6, 0, 0], "outside [0, 0.5]"),
                          ([0, 0, 0, 1], "reserved")):
            with pytest.raises(InferenceRejected) as err:
                client.route(h, d, policy=vec)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, vec
            assert err.value.message.startswith("policy_vector.values") and text in err.value.message
        assert client.route(h, d, policy=[1.0, 0, 0, 0]).split.shape == (paths.num_paths,)
    finally:
        client.close()


def _double_split_model(path):
    """The reference model with its split ratios doubled: a pair's splits sum to 2."""
    import onnx
    from onnx import helper

    from tellm.inference.reference_model import build_equal_split_model

    model = build_equal_split_model(variant="double")
    for node in model.graph.node:
        node.output[:] = ["split_true" if o == "split" else o for o in node.output]
        node.input[:] = ["split_true" if i == "split" else i for i in node.input]
    model.graph.node.extend([
        helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two_f", onnx.TensorProto.FLOAT, [1], [2.0])),
        helper.make_node("Mul", ["split_true", "two"], ["split"])])
    onnx.save(model, str(path))
    return path


def test_invalid_model_output_is_never_ok(served, net):
    topo, paths = net
    _double_split_model(served.model_dir / "double.onnx")
    client = InferenceClient(served.address, timeout_seconds=10, retries=0)
    try:
        h = client.register_topology(topo, paths, topology_id="outputs")
        client.reload_model("double.onnx")
        with pytest.raises(InferenceRejected) as err:
            client.route(h, demands(paths))
        assert err.value.code == grpc.StatusCode.INTERNAL
        assert "summing to 2" in err.value.message and "withheld" in err.value.message
    finally:
        client.reload_model(str(served.model))
        client.close()


def test_topology_store_is_capped_in_bytes_and_evicts_least_recently_used(tmp_path, net):
    from tellm.inference.topologies import build_topology

    topo, paths = net
    arrays = build_topology(topo.nodes, topo.src, topo.dst, topo.capacity_bps, topo.latency_seconds,
                            paths.pairs[:, 0], paths.pairs[:, 1], np.diff(paths.pair_ptr), np.diff(paths.path_ptr),
                            paths.path_links)
    model, _ = model_under_test(tmp_path / "m")
    s = Serve(tmp_path, "--model", str(model), "--max-topology-bytes", str(int(2.5 * arrays.nbytes)))
    client = InferenceClient(s.address, timeout_seconds=10, retries=0)
    try:
        d = demands(paths)
        used = client.register_topology(topo, paths, topology_id="routed-every-second")
        idle = client.register_topology(topo, paths, topology_id="registered-once")
        client.route(used, d)  # used after "registered-once" was registered
        client.register_topology(topo, paths, topology_id="junk")  # over the cap: one must go
        client.route(used, d)
        with pytest.raises(StaleTopology):
            client.route(idle, d)
        big_topo = ring_topology(12, chords=6, seed=1)
        with pytest.raises(InferenceRejected) as err:
            client.register_topology(big_topo, paths_for(big_topo, k=8), topology_id="too-big")
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-topology-bytes" in err.value.message
        client.route(used, d)
    finally:
        client.close()
        s.stop()
