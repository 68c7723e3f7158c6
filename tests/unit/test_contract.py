"""The contract package: one policy vocabulary, gRPC's retry policy in the client, one-way imports."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent import futures

import grpc
import pytest

from tellm.contract.client import InferenceClient, InferenceUnavailable
from tellm.contract.policies import POLICIES, PolicyError, canonical_name, make_policy
from tellm.contract.v1 import traffic_engineering_service_pb2 as pb
from tellm.contract.v1 import traffic_engineering_service_pb2_grpc as pb_grpc
from tellm.contract.vocabulary import INPUT_NAMES, INPUT_TYPES, POLICY_DIM


def test_policy_names_have_one_spelling():
    assert set(POLICIES) == {"min_mlu", "headroom", "latency_aware"}
    assert canonical_name("min-mlu") == "min_mlu" and canonical_name("latency-aware") == "latency_aware"
    assert make_policy("min-mlu").name == "min_mlu"
    hyphenated = make_policy("latency-aware", {"weight": 0.25})
    assert hyphenated == make_policy("latency_aware", {"weight": 0.25})
    assert hyphenated.to_vector().shape == (POLICY_DIM,)
    with pytest.raises(PolicyError, match="unknown policy"):
        make_policy("min mlu")


def test_reference_model_declares_the_vocabulary(tmp_path):
    onnx = pytest.importorskip("onnx")
    from tellm.inference.reference_model import build_equal_split_model

    graph = build_equal_split_model().graph
    assert tuple(i.name for i in graph.input) == INPUT_NAMES == tuple(INPUT_TYPES)
    policy = next(i for i in graph.input if i.name == "policy")
    assert [d.dim_value for d in policy.type.tensor_type.shape.dim] == [POLICY_DIM]
    assert onnx.TensorProto.FLOAT == policy.type.tensor_type.elem_type


class _FlakyService(pb_grpc.TrafficEngineeringServiceServicer):
    """Answers GetModelInfo with UNAVAILABLE ``failures`` times, then OK; counts the attempts."""

    def __init__(self, failures: int):
        self.failures = failures
        self.attempts = 0
        self.lock = threading.Lock()

    def GetModelInfo(self, request, context):
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.failures:
                context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return pb.GetModelInfoResponse(model=pb.ModelInfo(version="v-test"))


@pytest.fixture
def flaky():
    def start(failures: int):
        service = _FlakyService(failures)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_TrafficEngineeringServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return service, f"127.0.0.1:{port}"

    servers: list[grpc.Server] = []
    yield start
    for s in servers:
        s.stop(0)


@pytest.mark.parametrize("retries, failures, ok", [(2, 2, True), (2, 3, False), (0, 1, False)])
def test_unavailable_is_retried_by_the_channel(flaky, retries, failures, ok):
    service, address = flaky(failures)
    with InferenceClient(address, timeout_seconds=2.0, retries=retries, backoff_seconds=0.01) as client:
        if ok:
            assert client.model_info().version == "v-test"
        else:
            with pytest.raises(InferenceUnavailable, match="warming up"):
                client.model_info()
    assert service.attempts == min(failures + 1, retries + 1)


def test_import_arrows_run_one_way():
    """The inference service does not import the policy package; the contract's clients (controller,
    policy, scenarios) do not import the inference package."""
    checks = {
        "tellm.inference.server, tellm.inference.service": "tellm.policy",
        "tellm.controller.routers, tellm.controller.core, tellm.policy.tools, tellm.policy.service, "
        "tellm.policy.daemon, tellm.mininet_scenarios.orchestrate, tellm.contract.client, "
        "tellm.contract.policy_client, tellm.contract.onnx_io": "tellm.inference",
    }
    for modules, forbidden in checks.items():
        code = (f"import sys, {modules}; bad = [m for m in sys.modules if m.startswith('{forbidden}')]; "
                f"assert not bad, bad")
        subprocess.run([sys.executable, "-c", code], check=True)
