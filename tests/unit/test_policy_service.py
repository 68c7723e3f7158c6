"""PolicyService over a real gRPC server on loopback: set, get, list, bounds, versions, persistence."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest


from tellm.contract.policies import make_policy  # noqa: E402
from tellm.contract.policy_client import PolicyClient, PolicyServiceError  # noqa: E402
from tellm.policy.service import PolicyStore, active_policy_vector, serve  # noqa: E402


@pytest.fixture
def server(tmp_path):
    srv, port, store = serve("127.0.0.1:0", PolicyStore(tmp_path / "policies.json"))
    client = PolicyClient(f"127.0.0.1:{port}")
    yield client, store, tmp_path / "policies.json"
    client.close()
    srv.stop(grace=None)


def test_set_get_list_over_grpc(server):
    client, store, _ = server
    cur = client.get_policy()
    assert cur.policy.name == "min_mlu" and cur.version == 0
    names = {d["name"]: d for d in client.list_policies()}
    assert names["headroom"]["params"][0] | {"description": ""} == {"name": "fraction", "min": 0.0, "max": 0.5,
                                                                     "default": 0.2, "description": ""}
    applied, prev = client.set_policy(make_policy("headroom", {"fraction": 0.3}), reason="bursts", actor="test")
    assert applied.version == 1 and prev.policy.name == "min_mlu"
    assert applied.policy.params == {"fraction": pytest.approx(0.3)}
    # The accessor the inference server calls for Route requests without an explicit policy.
    assert active_policy_vector("", store).tolist() == pytest.approx([0, 0.3, 0, 0])
    # A topology without its own policy inherits the default; its own policy overrides it.
    assert client.get_policy("geant").inherited_default
    assert store.active_policy_vector("geant").tolist() == pytest.approx([0, 0.3, 0, 0])
    client.set_policy(make_policy("latency_aware", {"weight": 0.4}), topology_id="geant", reason="r")
    assert store.active_policy_vector("geant").tolist() == pytest.approx([0.4, 0, 0, 0])
    assert store.active_policy_vector("").tolist() == pytest.approx([0, 0.3, 0, 0])
    got = client.get_policy()
    assert (got.policy.name, got.version, got.reason, got.actor) == ("headroom", 1, "bursts", "test")


def test_out_of_bounds_and_unknown_are_invalid_argument(server):
    client, store, _ = server
    import tellm.contract.v1.policy_pb2 as pb
    import tellm.contract.v1.policy_pb2_grpc as pb_grpc

    stub = pb_grpc.PolicyServiceStub(grpc.insecure_channel(client.address))
    for name, params, text in [("headroom", {"fraction": 0.7}, "'fraction' = 0.7 is outside [0, 0.5]"),
                               ("latency_aware", {"speed": 1.0}, "no parameter 'speed'"),
                               ("fastest", {}, "unknown policy 'fastest'")]:
        with pytest.raises(grpc.RpcError) as e:
            stub.SetPolicy(pb.SetPolicyRequest(policy_name=name, params=params, reason="x"), timeout=2)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in e.value.details()
    assert store.get().version == 0  # nothing applied


def test_store_is_thread_safe_and_persists(server, tmp_path):
    client, store, state_file = server

    def worker(i):
        for j in range(20):
            store.set("", make_policy("headroom", {"fraction": (i * 20 + j) / 200}), reason=f"{i}/{j}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert store.get().version == 80
    last = store.get()
    restarted = PolicyStore(state_file)  # a restarted server comes back with the last policy
    assert restarted.get().policy == last.policy and restarted.get().version == 80
    state_file.write_text("{ not json")
    assert PolicyStore(state_file).get().policy.name == "min_mlu"  # damaged file: default, no crash


def test_client_error_when_service_down():
    c = PolicyClient("127.0.0.1:1", timeout_seconds=0.5)
    with pytest.raises(PolicyServiceError, match="UNAVAILABLE"):
        c.get_policy()
    assert np.all(active_policy_vector("anything", PolicyStore()) == 0)
