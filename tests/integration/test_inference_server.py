"""The inference service in-process on a loopback port: routing, every error code, deadlines,
concurrency, health, reflection, metrics over HTTP, hot reload (file change and RPC), retries."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from ..inference_support import (RunningServer, big_ring, check_reply_contract, demands, model_under_test,
                               other_model, paths_for, ring_topology)
from prometheus_client.parser import text_string_to_metric_families

from tecore import Topology
from tellm.contract.client import (InferenceClient, InferenceRejected, InferenceUnavailable, StaleTopology,
                                    TopologyHandle)
from tellm.contract.codec import register_request, set_packed
from tellm.inference.reference_model import write_equal_split_model
from tellm.contract.v1 import traffic_engineering_service_pb2 as pb
from tellm.contract.v1 import traffic_engineering_service_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path, is_reference = model_under_test(tmp_path_factory.mktemp("model"))
    s = RunningServer(path, watch_interval_seconds=0)
    s.is_reference = is_reference
    yield s
    s.stop()


@pytest.fixture(scope="module")
def net():
    topo = ring_topology(6, chords=2)
    return topo, paths_for(topo, k=3)


@pytest.fixture(scope="module")
def handle(served, net):
    return served.client.register_topology(*net, topology_id="ring")


@pytest.fixture(scope="module")
def stub(served):
    channel = grpc.insecure_channel(served.address)
    yield pb_grpc.TrafficEngineeringServiceStub(channel)
    channel.close()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def count(samples, method: str, code: str) -> float:
    return samples.get(("tellm_inference_requests_total", (("code", code), ("method", method))), 0.0)


# ------------------------------------------------------------------ routing
def test_route_returns_valid_split_loads_and_mlu(served, net, handle):
    topo, paths = net
    d = demands(paths, seed=1)
    reply = served.client.route(handle, d)
    check_reply_contract(topo, paths, d, None, reply)
    assert reply.model_version == served.client.model_info().version
    assert 0 < reply.server_seconds < 5
    if served.is_reference:
        np.testing.assert_allclose(reply.split, 1.0 / paths.paths_per_pair[paths.path_pair], rtol=1e-6)


def test_failed_link_gets_no_traffic(served, net, handle):
    topo, paths = net
    d = demands(paths, seed=2)
    busiest = int(np.argmax(np.asarray(paths.incidence.sum(axis=0)).ravel()))
    up = np.ones(topo.num_links, bool)
    up[busiest] = False
    reply = served.client.route(handle, d, link_up=up)
    check_reply_contract(topo, paths, d, up, reply)  # includes: no split on paths over the down link
    # On a ring with chords every pair keeps a path around the failure, so the link carries nothing.
    assert reply.link_load_bps[busiest] == pytest.approx(0.0, abs=1e-3)


def test_policies_by_name_and_vector(served, net, handle):
    _, paths = net
    d = demands(paths, seed=3)
    info = served.client.model_info()
    assert "min_mlu" in info.policy_names and info.policy_dim >= 1
    a = served.client.route(handle, d, policy="min-mlu")
    b = served.client.route(handle, d, policy=[0.0] * info.policy_dim)
    np.testing.assert_allclose(a.split, b.split)


def test_reregistration_versions(served, net):
    topo, paths = net
    c = served.client
    h1 = c.register_topology(topo, paths, topology_id="versioned")
    assert c.register_topology(topo, paths, topology_id="versioned") == h1  # same content: same version
    changed = Topology(name=topo.name, nodes=topo.nodes, src=topo.src, dst=topo.dst,
                       capacity_bps=topo.capacity_bps * 2, weight=topo.weight, latency_seconds=topo.latency_seconds)
    h2 = c.register_topology(changed, paths, topology_id="versioned")
    assert h2.topology_id == "versioned" and h2.version == h1.version + 1
    d = demands(paths, seed=4)
    with pytest.raises(StaleTopology) as err:
        c.route(h1, d)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "stale" in err.value.message
    check_reply_contract(changed, paths, d, None, c.route(h2, d))


def test_unknown_topology_is_failed_precondition(served, net):
    with pytest.raises(StaleTopology) as err:
        served.client.route(TopologyHandle("no-such-topology", 1), demands(net[1]))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no-such-topology" in err.value.message


# ------------------------------------------------------------------ bad input
def _bad(values, i, v):
    values = values.copy()
    values[i] = v
    return values


@pytest.mark.parametrize("case, field", [
    ("nan", "demand_bps[5]"), ("inf", "demand_bps[5]"), ("negative", "demand_bps[5]"),
    ("short", "demand_bps"), ("long", "demand_bps"),
])
def test_bad_demand_is_invalid_argument(served, net, handle, case, field):
    d = demands(net[1], seed=5)
    bad = {"nan": _bad(d, 5, np.nan), "inf": _bad(d, 5, np.inf), "negative": _bad(d, 5, -1.0),
           "short": d[:-1], "long": np.append(d, 1.0)}[case]
    with pytest.raises(InferenceRejected) as err:
        served.client.route(handle, bad)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.message.startswith(field + ":"), err.value.message


def test_bad_link_state_and_policy(served, net, handle, stub):
    topo, paths = net
    d = demands(paths)
    cases = []
    cases.append(("link_state.link_up", dict(link_up=np.ones(topo.num_links - 1, bool))))
    cases.append(("policy_name", dict(policy="no-such-policy")))
    cases.append(("policy_vector.values", dict(policy=[0.0] * 7)))
    cases.append(("policy_vector.values", dict(policy=[math.nan, 0, 0, 0])))
    for field, kwargs in cases:
        with pytest.raises(InferenceRejected) as err:
            served.client.route(handle, d, **kwargs)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.message.startswith(field), err.value.message
    # Utilisation (raw stub: the client API does not send it): wrong length, negative, and a good one.
    for util, field in ((np.ones(3), "link_state.link_utilization"),
                        (_bad(np.full(topo.num_links, 0.5), 2, -0.1), "link_state.link_utilization[2]")):
        req = pb.RouteRequest(topology_id=handle.topology_id, topology_version=handle.version)
        set_packed(req, "demand_bps", d)
        set_packed(req.link_state, "link_utilization", util.astype(np.float32))
        with pytest.raises(grpc.RpcError) as err:
            stub.Route(req, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)
    req = pb.RouteRequest(topology_id=handle.topology_id, topology_version=handle.version)
    set_packed(req, "demand_bps", d)
    util = np.linspace(0, 0.7, topo.num_links).astype(np.float32)
    set_packed(req.link_state, "link_utilization", util)
    assert stub.Route(req, timeout=5).observed_mlu == pytest.approx(0.7, rel=1e-6)


def _register_case(topo, paths, case):
    req = register_request(topo, paths, topology_id=f"bad-{case}")
    p = req.paths
    if case == "empty":
        return pb.RegisterTopologyRequest(topology_id="empty"), "node_names"
    if case == "no_links":
        del req.links[:]
        return req, "links"
    if case == "no_pairs":
        req.ClearField("paths")
        return req, "paths.pair_src_nodes"
    if case == "missing_link":
        p.path_link_ids[3] = len(req.links) + 7
        return req, "paths.path_link_ids[3]"
    if case == "capacity":
        req.links[2].capacity_bps = 0.0
        return req, "links[2].capacity_bps"
    if case == "latency":
        req.links[1].latency_seconds = math.inf
        return req, "links[1].latency_seconds"
    if case == "node_range":
        req.links[0].dst_node = 99
        return req, "links[0].dst_node"
    if case == "counts":
        del p.path_link_counts[-1]
        return req, "paths.path_link_counts"
    if case == "pair_counts":
        p.pair_path_counts[0] = 0
        return req, "paths.pair_path_counts[0]"
    if case == "broken_path":  # first path's links swapped: they no longer meet
        n = p.path_link_counts[0]
        first = list(p.path_link_ids[:n])
        if n < 2:
            first = [first[0], first[0]]
        p.path_link_ids[0], p.path_link_ids[1] = first[1], first[0]
        return req, "paths.path_link_ids"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["empty", "no_links", "no_pairs", "missing_link", "capacity", "latency",
                                  "node_range", "counts", "pair_counts", "broken_path"])
def test_bad_registration_is_invalid_argument(served, stub, case):
    topo = ring_topology(5, chords=1, seed=3)
    paths = paths_for(topo, k=2)
    req, field = _register_case(topo, paths, case)
    with pytest.raises(grpc.RpcError) as err:
        stub.RegisterTopology(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith(field), err.value.details()


def test_server_keeps_serving_and_counts_codes(served, net, handle):
    before = scrape(served.server.metrics_port)
    d = demands(net[1])
    for _ in range(3):
        with pytest.raises(InferenceRejected):
            served.client.route(handle, _bad(d, 0, np.nan))
    with pytest.raises(InferenceRejected):
        served.client.route(TopologyHandle("gone", 1), d)
    check_reply_contract(*net, d, None, served.client.route(handle, d))
    after = scrape(served.server.metrics_port)
    assert count(after, "Route", "INVALID_ARGUMENT") - count(before, "Route", "INVALID_ARGUMENT") == 3
    assert count(after, "Route", "FAILED_PRECONDITION") - count(before, "Route", "FAILED_PRECONDITION") == 1
    assert count(after, "Route", "OK") - count(before, "Route", "OK") == 1
    hist = after[("tellm_inference_request_duration_seconds_count", (("method", "Route"),))]
    assert hist >= 5
    info = served.client.model_info()
    assert after[("tellm_model_info", tuple(sorted({"version": info.version, "provider": info.provider,
                                                    "sha256": info.sha256, "path": info.path}.items())))] == 1
    assert after[("tellm_inference_provider_info", (("provider", "CPUExecutionProvider"),))] == 1


# ------------------------------------------------------------------ size, deadlines, concurrency
def test_large_topology_and_deadline(served):
    topo, paths = big_ring(200)  # ~8M path-link entries: far above gRPC's default 4 MiB limit
    patient = InferenceClient(served.address, timeout_seconds=300, retries=0)  # the trained head takes seconds here
    h = patient.register_topology(topo, paths, topology_id="bigring")
    d = np.full(paths.num_pairs, 1e6, np.float32)
    reply = patient.route(h, d)
    patient.close()
    assert reply.split.shape == (paths.num_paths,)
    np.testing.assert_allclose(np.bincount(paths.path_pair, reply.split), 1.0, atol=1e-5)
    model_seconds = reply.server_seconds
    # A deadline far shorter than one model run: the caller gets DEADLINE_EXCEEDED quickly and the
    # server records the call as DEADLINE_EXCEEDED (checked before the run or stopped during it).
    before = count(scrape(served.server.metrics_port), "Route", "DEADLINE_EXCEEDED")
    fast = InferenceClient(served.address, timeout_seconds=max(model_seconds / 20, 0.001), retries=0)
    t0 = time.perf_counter()
    with pytest.raises(InferenceUnavailable) as err:
        fast.route(h, d)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.perf_counter() - t0 < model_seconds + 1.0
    fast.close()
    deadline = time.monotonic() + 10
    while count(scrape(served.server.metrics_port), "Route", "DEADLINE_EXCEEDED") <= before:
        assert time.monotonic() < deadline, "the server never recorded the deadline"
        time.sleep(0.05)


def test_concurrent_requests_get_their_own_answers(served, net, handle):
    topo, paths = net
    inputs = [demands(paths, seed=100 + i) for i in range(64)]

    def one(i):
        up = np.ones(topo.num_links, bool)
        up[i % topo.num_links] = i % 3 != 0
        return i, up, served.client.route(handle, inputs[i], link_up=up)

    with ThreadPoolExecutor(max_workers=16) as pool:
        for i, up, reply in pool.map(one, range(len(inputs))):
            check_reply_contract(topo, paths, inputs[i], up, reply)


# ------------------------------------------------------------------ health and reflection
def test_health_and_reflection(served):
    assert served.client.health()
    channel = grpc.insecure_channel(served.address)
    try:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = db.get_services()
        assert "tellm.v1.TrafficEngineeringService" in services and "grpc.health.v1.Health" in services
        # Every served service answers gRPC health by name (container healthchecks ask for each).
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("tellm.v1.TrafficEngineeringService", "tellm.v1.PolicyService"):
            status = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING, name
        # The served schema, fetched over reflection (what grpcurl and Postman do).
        file_proto = db.FindFileContainingSymbol("tellm.v1.TrafficEngineeringService")
        service = next(sv for sv in file_proto.service if sv.name == "TrafficEngineeringService")
        methods = {m.name: (m.input_type, m.output_type) for m in service.method}
        assert methods["Route"] == (".tellm.v1.RouteRequest", ".tellm.v1.RouteResponse")
        assert set(methods) == {"RegisterTopology", "Route", "ReloadModel", "GetModelInfo"}
        reply = next(m for m in file_proto.message_type if m.name == "RouteResponse")
        assert "split" in {f.name for f in reply.field}
    finally:
        channel.close()


# ------------------------------------------------------------------ hot reload
def test_hot_reload_on_file_change_and_by_rpc(tmp_path, net):
    path, _ = model_under_test(tmp_path / "serving")
    s = RunningServer(path, watch_interval_seconds=0.1, model_dir=tmp_path)
    try:
        topo, paths = net
        h = s.client.register_topology(topo, paths)
        d = demands(paths)
        v1 = s.client.route(h, d).model_version
        # Replace the file atomically with a different model: the watcher swaps it in.
        replacement = other_model(tmp_path / "staging")
        os.replace(replacement, path)
        deadline = time.monotonic() + 15
        while (v2 := s.client.model_info().version) == v1:
            assert time.monotonic() < deadline, "the server never picked up the new model file"
            time.sleep(0.05)
        assert s.client.route(h, d).model_version == v2
        assert s.client.model_info().load_count == 2
        # A broken file never replaces a working model; the RPC says why.
        broken = tmp_path / "staging" / "broken.onnx"
        broken.write_bytes(b"this is not an onnx model")
        os.replace(broken, path)
        time.sleep(0.5)
        assert s.client.model_info().version == v2
        check_reply_contract(topo, paths, d, None, s.client.route(h, d))
        with pytest.raises(InferenceRejected) as err:
            s.client.reload_model()
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        samples = scrape(s.server.metrics_port)
        assert samples[("tellm_inference_model_reloads_total", (("result", "failure"),))] >= 1
        # Reload by RPC from another path, then bad paths.
        original, _ = model_under_test(tmp_path / "again")
        info, changed = s.client.reload_model(str(original))
        assert changed and info.version == v1 and s.client.route(h, d).model_version == v1
        info, changed = s.client.reload_model(str(original))
        assert not changed and info.version == v1
        with pytest.raises(InferenceRejected) as err:
            s.client.reload_model(str(tmp_path / "missing.onnx"))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.message.startswith("model_path")
        assert f'version="{v1}"' in urllib.request.urlopen(
            f"http://127.0.0.1:{s.server.metrics_port}/metrics").read().decode()
    finally:
        s.stop()


def test_wrong_interface_model_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])
    wrong = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    wrong.ir_version = 8
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    path, _ = model_under_test(tmp_path / "serving")
    s = RunningServer(path, watch_interval_seconds=0, model_dir=tmp_path)
    try:
        with pytest.raises(InferenceRejected) as err:
            s.client.reload_model(str(tmp_path / "wrong.onnx"))
        assert "not the tellm TE interface" in err.value.message
        assert s.client.health()
    finally:
        s.stop()


def test_model_card_version_and_named_policy(tmp_path, net):
    path = write_equal_split_model(tmp_path / "model.onnx")  # a model whose card this test writes
    path.with_suffix(".json").write_text(json.dumps({"version": "card-7", "policies": {"latency": [1, 0, 0, 0]}}))
    s = RunningServer(path, watch_interval_seconds=0)
    try:
        info = s.client.model_info()
        assert info.version.startswith("card-7+") and set(info.policy_names) == {"min_mlu", "latency"}
        assert json.loads(info.card_json)["version"] == "card-7"
        h = s.client.register_topology(*net)
        reply = s.client.route(h, demands(net[1]), policy="latency")
        assert reply.model_version == info.version
    finally:
        s.stop()


# ------------------------------------------------------------------ client retries
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client_retries_until_the_server_comes_up(tmp_path, net):
    from tellm.inference.server import InferenceServer, ServerConfig

    path, _ = model_under_test(tmp_path)
    port = _free_port()
    dead = InferenceClient(f"127.0.0.1:{port}", timeout_seconds=0.5, retries=0)
    with pytest.raises(InferenceUnavailable) as err:
        dead.register_topology(*net)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert not dead.health()
    dead.close()

    server = InferenceServer(ServerConfig(model_path=path, port=port, metrics_port=None, watch_interval_seconds=0))
    starter = threading.Timer(0.5, server.start)
    # gRPC makes at most 5 attempts per call: 4 retries backing off 0.5, 1, 2, 2 s wait for the server's start.
    client = InferenceClient(f"127.0.0.1:{port}", timeout_seconds=2.0, retries=4, backoff_seconds=0.5,
                             max_backoff_seconds=2.0)
    starter.start()
    try:
        handle = client.register_topology(*net)
        assert handle.version == 1
        assert client.health()
    finally:
        starter.join()
        client.close()
        server.stop(0)


def test_model_slots_serialise_runs(tmp_path):
    """--max-parallel-runs 1: of two simultaneous large requests one waits for the other's run."""
    path, _ = model_under_test(tmp_path)
    s = RunningServer(path, watch_interval_seconds=0, max_parallel_runs=1)
    channel = grpc.insecure_channel(s.address, options=[("grpc.max_send_message_length", 256 << 20),
                                                        ("grpc.max_receive_message_length", 256 << 20)])
    try:
        topo, paths = big_ring(150)
        h = s.client.register_topology(topo, paths, topology_id="slots")
        stub = pb_grpc.TrafficEngineeringServiceStub(channel)
        req = pb.RouteRequest(topology_id=h.topology_id, topology_version=h.version)
        set_packed(req, "demand_bps", np.full(paths.num_pairs, 1e6, np.float32))
        stub.Route(req, timeout=60)  # warm-up
        barrier = threading.Barrier(2)

        def call(_):
            barrier.wait()
            return stub.Route(req, timeout=60).timings

        with ThreadPoolExecutor(max_workers=2) as pool:
            a, b = list(pool.map(call, range(2)))
        # One ran at once; the other queued for about one model run before its own run.
        first, second = sorted((a, b), key=lambda t: t.queue_seconds)
        assert first.queue_seconds < 0.5 * first.model_seconds, (a, b)
        assert second.queue_seconds >= 0.7 * first.model_seconds, (a, b)
        for t in (a, b):
            parts = t.decode_seconds + t.queue_seconds + t.model_seconds + t.encode_seconds
            assert parts == pytest.approx(t.total_seconds, rel=1e-6, abs=1e-6)
    finally:
        channel.close()
        s.stop()
