"""Client of the tellm inference service (the controller and the policy daemon use it).

    from tellm.contract.client import InferenceClient
    client = InferenceClient("127.0.0.1:50051", timeout_seconds=1.0, retries=2)
    handle = client.register_topology(topo, paths)          # once, and again after a topology change
    reply = client.route(handle, demand_bps, link_up=None, policy=None)
    reply.split, reply.link_load_bps, reply.mlu, reply.model_version, reply.server_seconds

Every call has a deadline (``timeout_seconds``; registration gets ``register_timeout_seconds``
because Kdl-size path sets take seconds to send and index). UNAVAILABLE (server down, restarting, no
model) is retried ``retries`` times by gRPC's own retry policy (the channel's service config):
exponential backoff from ``backoff_seconds`` doubling up to ``max_backoff_seconds``, with jitter;
gRPC allows at most 5 attempts per call, so ``retries`` above 4 count as 4. The deadline of a call
covers its retries: it is the call's timeout plus the longest the backoff can wait. Errors surface
as two exception types: ``InferenceUnavailable`` (unreachable, deadline passed, shutting down: try
again later or fall back) and ``InferenceRejected`` (the server refused the request: fix it;
``.code`` says why). ``StaleTopology`` is the rejection a controller handles by registering again
(unknown id after a server restart, or an old version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tellm.contract.security.settings import PLAINTEXT, ClientSecurity

from .codec import get_array, register_request, set_packed
from .v1 import traffic_engineering_service_pb2 as pb
from .v1 import traffic_engineering_service_pb2_grpc as pb_grpc
from .vocabulary import DEFAULT_INFERENCE_ADDRESS, MAX_MESSAGE_BYTES, TE_SERVICE_NAME

#: gRPC's limit on attempts per call (the retry policy's maxAttempts is clamped to it).
MAX_ATTEMPTS = 5
#: gRPC's retry backoff is jittered by +-20 %.
_BACKOFF_JITTER = 0.2


class InferenceError(Exception):
    """Base of the client's errors; ``code`` is the gRPC status code, ``message`` the server's text."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InferenceUnavailable(InferenceError):
    """The service could not answer in time (unreachable, deadline exceeded, shutting down)."""


class InferenceRejected(InferenceError):
    """The service refused the request (INVALID_ARGUMENT, FAILED_PRECONDITION, ...)."""


class StaleTopology(InferenceRejected):
    """The topology id is unknown to the server or the version is old: register the topology again."""


_UNAVAILABLE_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


@dataclass(frozen=True)
class TopologyHandle:
    topology_id: str
    version: int


@dataclass(frozen=True, eq=False)
class RouteReply:
    split: np.ndarray  # float32 [Np], per path in registration order
    link_load_bps: np.ndarray  # float32 [L]
    mlu: float
    model_version: str
    server_seconds: float


def retry_service_config(retries: int, backoff_seconds: float, max_backoff_seconds: float) -> dict:
    """Service config retrying UNAVAILABLE on every TrafficEngineeringService method (health probes
    are not retried); no retry policy at all when ``retries`` is 0."""
    method: dict = {"name": [{"service": TE_SERVICE_NAME}]}
    if retries > 0:
        method["retryPolicy"] = {
            "maxAttempts": min(retries + 1, MAX_ATTEMPTS),
            "initialBackoff": f"{backoff_seconds:.6f}s",
            "maxBackoff": f"{max(max_backoff_seconds, backoff_seconds):.6f}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return {"methodConfig": [method]}


def retry_budget_seconds(retries: int, backoff_seconds: float, max_backoff_seconds: float) -> float:
    """The longest the retry policy's backoff can wait in one call (added to each call's deadline)."""
    delays = [min(max(max_backoff_seconds, backoff_seconds), backoff_seconds * 2 ** k)
              for k in range(min(retries, MAX_ATTEMPTS - 1))]
    return sum(delays) * (1 + _BACKOFF_JITTER)


class InferenceClient:
    def __init__(self, address: str = DEFAULT_INFERENCE_ADDRESS, timeout_seconds: float = 1.0, retries: int = 2,
                 *, register_timeout_seconds: float = 120.0, backoff_seconds: float = 0.05,
                 max_backoff_seconds: float = 1.0, security: ClientSecurity = PLAINTEXT):
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if retries and backoff_seconds <= 0:
            raise ValueError("backoff_seconds must be > 0 when retrying")
        self.address = address
        self.timeout_seconds = timeout_seconds
        self.register_timeout_seconds = max(register_timeout_seconds, timeout_seconds)
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._retry_budget_seconds = retry_budget_seconds(retries, backoff_seconds, max_backoff_seconds)
        self._channel = security.channel(address, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(retry_service_config(retries, backoff_seconds, max_backoff_seconds))),
            # gRPC retries a call only while its request is still buffered: keep the largest one.
            ("grpc.per_rpc_retry_buffer_size", MAX_MESSAGE_BYTES),
            # Fail fast while the server is down (the retry policy does the backoff), but do not
            # wait the default 120 s+ between reconnection attempts after a restart.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])
        self._stub = pb_grpc.TrafficEngineeringServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # ------------------------------------------------------------------ plumbing
    def _call(self, method, request, timeout_seconds: float):
        try:
            return method(request, timeout=timeout_seconds + self._retry_budget_seconds)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code in _UNAVAILABLE_CODES:
                raise InferenceUnavailable(code, details or code.name) from None
            if code == grpc.StatusCode.FAILED_PRECONDITION and "topology" in details:
                raise StaleTopology(code, details) from None
            raise InferenceRejected(code, details) from None

    # ------------------------------------------------------------------ API
    def register_topology(self, topo, paths, topology_id: str | None = None) -> TopologyHandle:
        """Register ``topo`` (tecore Topology) with its candidate ``paths`` (tecore PathSet).

        ``topology_id`` defaults to the topology's name; registering changed content under the same
        id returns a higher version.
        """
        reply = self._call(self._stub.RegisterTopology, register_request(topo, paths, topology_id),
                           self.register_timeout_seconds)
        return TopologyHandle(topology_id=reply.topology_id, version=int(reply.version))

    def route(self, handle: TopologyHandle, demand_bps: np.ndarray, link_up: np.ndarray | None = None,
              policy: str | Sequence[float] | None = None) -> RouteReply:
        """Split ratios for one traffic matrix.

        ``demand_bps``: [P] per registered pair (PathSet.pairs order), bit/s. ``link_up``: [L] bool
        (or 0/1), None = all up. ``policy``: a policy name known to the model (see ``model_info``),
        a raw policy vector, or None for plain min-MLU.
        """
        req = pb.RouteRequest(topology_id=handle.topology_id, topology_version=handle.version)
        set_packed(req, "demand_bps", np.asarray(demand_bps, dtype=np.float32).reshape(-1))
        if link_up is not None:
            set_packed(req.link_state, "link_up", np.asarray(link_up).reshape(-1).astype(bool))
        if isinstance(policy, str):
            req.policy_name = policy
        elif policy is not None:
            set_packed(req.policy_vector, "values", np.asarray(policy, dtype=np.float32).reshape(-1))
            if not len(req.policy_vector.values):
                req.policy_vector.SetInParent()
        reply = self._call(self._stub.Route, req, self.timeout_seconds)
        return RouteReply(split=get_array(reply, "split", np.float32),
                          link_load_bps=get_array(reply, "link_load_bps", np.float32), mlu=float(reply.mlu),
                          model_version=reply.model_version, server_seconds=float(reply.timings.total_seconds))

    def model_info(self) -> pb.ModelInfo:
        return self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), self.timeout_seconds).model

    def reload_model(self, model_path: str | None = None) -> tuple[pb.ModelInfo, bool]:
        """Ask the server to reload its model (or load ``model_path``); returns (info, changed)."""
        reply = self._call(self._stub.ReloadModel, pb.ReloadModelRequest(model_path=model_path or ""),
                           max(self.timeout_seconds, 60.0))
        return reply.model, reply.changed

    def health(self) -> bool:
        """True when the server answers SERVING for the TE service (no retries: a probe)."""
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=TE_SERVICE_NAME),
                                       timeout=self.timeout_seconds)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "InferenceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
