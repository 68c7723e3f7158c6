"""Client of PolicyService (the policy daemon, the MCP server, ``tellm policy`` and scripts use it).

    from tellm.contract.policy_client import PolicyClient
    client = PolicyClient("127.0.0.1:50051")
    applied, previous = client.set_policy(make_policy("headroom", {"fraction": 0.2}), "geant", reason="bursts")

Errors surface as ``PolicyServiceError`` (``code`` is the gRPC status code).
"""

from __future__ import annotations

import grpc

from tellm.contract.security.settings import PLAINTEXT, ClientSecurity

from .codec import applied_from_pb, policy_descriptions_from_pb
from .policies import DEFAULT_TOPOLOGY, AppliedPolicy, Policy
from .v1 import policy_pb2 as pb
from .v1 import policy_pb2_grpc as pb_grpc
from .vocabulary import DEFAULT_INFERENCE_ADDRESS


class PolicyServiceError(RuntimeError):
    """PolicyService unreachable or refused the call (``code`` is the gRPC status code)."""

    def __init__(self, code, message: str):
        super().__init__(f"policy service: {code.name}: {message}")
        self.code = code


def _rpc(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except grpc.RpcError as exc:
        raise PolicyServiceError(exc.code(), exc.details() or exc.code().name) from None


class PolicyClient:
    """Client of PolicyService; errors are PolicyServiceError."""

    def __init__(self, address: str = DEFAULT_INFERENCE_ADDRESS, timeout_seconds: float = 2.0,
                 security: ClientSecurity = PLAINTEXT):
        self.address = address
        self.timeout_seconds = timeout_seconds
        self._channel = security.channel(address)  # TLS and the token, when configured
        self._stub = pb_grpc.PolicyServiceStub(self._channel)

    def set_policy(self, policy: Policy, topology_id: str = DEFAULT_TOPOLOGY, reason: str = "",
                   actor: str = "") -> tuple[AppliedPolicy, AppliedPolicy]:
        r = _rpc(self._stub.SetPolicy, pb.SetPolicyRequest(topology_id=topology_id, policy_name=policy.name,
                                                         params=dict(policy.params), reason=reason, actor=actor),
                 timeout=self.timeout_seconds)
        return applied_from_pb(r.policy), applied_from_pb(r.previous)

    def get_policy(self, topology_id: str = DEFAULT_TOPOLOGY) -> AppliedPolicy:
        return applied_from_pb(_rpc(self._stub.GetPolicy, pb.GetPolicyRequest(topology_id=topology_id),
                                    timeout=self.timeout_seconds).policy)

    def list_policies(self) -> list[dict]:
        r = _rpc(self._stub.ListPolicies, pb.ListPoliciesRequest(), timeout=self.timeout_seconds)
        return policy_descriptions_from_pb(r.policies)

    def close(self) -> None:
        self._channel.close()
