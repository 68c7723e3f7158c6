"""The inference service's model lifecycle on a loopback port: hot reload (file change and RPC),
refused models, model cards and named policies, client retries while the server starts, and the
model-run slots (--max-parallel-runs)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from ..inference_support import (RunningServer, big_ring, check_reply_contract, demands, model_under_test,
                               other_model, paths_for, ring_topology, scrape)

from tellm.contract.client import InferenceClient, InferenceRejected, InferenceUnavailable
from tellm.contract.codec import set_packed
from tellm.inference.reference_model import write_equal_split_model
from tellm.contract.v1 import traffic_engineering_service_pb2 as pb
from tellm.contract.v1 import traffic_engineering_service_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def net():
    topo = ring_topology(6, chords=2)
    return topo, paths_for(topo, k=3)


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
            sent = time.monotonic()
            return sent, stub.Route(req, timeout=60).timings

        # On a loaded machine one thread can leave the barrier after the other's run is over; such a
        # try says nothing about the slot, so the pair is sent again (at most five times).
        for _ in range(5):
            with ThreadPoolExecutor(max_workers=2) as pool:
                (sent_a, a), (sent_b, b) = list(pool.map(call, range(2)))
            if abs(sent_a - sent_b) < 0.3 * min(a.model_seconds, b.model_seconds):
                break
        else:
            pytest.fail(f"the two requests never left within 30 % of a run of each other: {a} {b}")
        # One ran at once; the other queued for about one model run before its own run.
        first, second = sorted((a, b), key=lambda t: t.queue_seconds)
        assert first.queue_seconds < 0.5 * first.model_seconds, (a, b)
        assert second.queue_seconds >= 0.6 * first.model_seconds, (a, b)
        for t in (a, b):
            parts = t.decode_seconds + t.queue_seconds + t.model_seconds + t.encode_seconds
            assert parts == pytest.approx(t.total_seconds, rel=1e-6, abs=1e-6)
    finally:
        channel.close()
        s.stop()
