"""The active policy per topology, and the gRPC PolicyService that sets it.

The store lives inside the inference server's process (``tellm serve`` registers it with
``add_policy_service``); the server calls ``active_policy_vector(topology_id)`` for every Route request that
carries no explicit policy. The policy daemon only ever calls SetPolicy, so forwarding never depends
on it: if it dies, the last policy stays. ``tellm policy serve`` runs the service on its own (demos,
tests, controllers that read the policy themselves).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import grpc
import numpy as np

from .admission import (HISTORY_LIMIT, MAX_POLICY_TOPOLOGIES, ChangeLimiter, PolicyJournal, RateLimited,
                        check_sizes)
from .policies import DEFAULT_POLICY, Policy, PolicyError, list_policies, make_policy

log = logging.getLogger(__name__)

DEFAULT_TOPOLOGY = ""


@dataclass(frozen=True)
class AppliedPolicy:
    topology_id: str
    policy: Policy
    version: int = 0
    applied_at_unix_seconds: float = 0.0
    reason: str = ""
    actor: str = ""
    inherited_default: bool = False

    def to_dict(self) -> dict:
        return {"topology_id": self.topology_id, "policy": self.policy.to_dict(), "version": self.version,
                "policy_vector": self.policy.to_vector().tolist(),
                "applied_at_unix_seconds": self.applied_at_unix_seconds, "reason": self.reason,
                "actor": self.actor, "inherited_default": self.inherited_default}


@dataclass
class _Entry:
    current: AppliedPolicy
    history: deque[AppliedPolicy] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))


class PolicyStore:
    """Thread-safe map topology id -> active policy ("" = default), optionally persisted (an
    append-only journal, admission.PolicyJournal) so a restarted server comes back with the last
    policy. Reads take no lock (the Route path); each topology keeps ``HISTORY_LIMIT`` past policies;
    at most ``MAX_POLICY_TOPOLOGIES`` topologies hold a policy of their own."""

    def __init__(self, state_file: str | Path | None = None,
                 on_change: Callable[[AppliedPolicy, AppliedPolicy], None] | None = None):
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._state_file = Path(state_file) if state_file else None
        self._journal = PolicyJournal(self._state_file) if self._state_file else None
        self._on_change = on_change
        if self._journal is not None:
            self._load()

    def _load(self) -> None:
        try:
            for tid, d in self._journal.load().items():
                pol = make_policy(d["policy"]["name"], d["policy"]["params"])
                self._entries[tid] = _Entry(AppliedPolicy(tid, pol, int(d["version"]), float(d["applied_at_unix_seconds"]),
                                                          d.get("reason", ""), d.get("actor", "")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged state file must not stop the inference server: start from the default.
            log.error("policy state file %s unreadable (%s); starting with the default policy", self._state_file, exc)
            self._entries.clear()

    def _snapshot(self) -> list[dict]:
        with self._lock:
            return [e.current.to_dict() for e in self._entries.values()]

    def get(self, topology_id: str = DEFAULT_TOPOLOGY) -> AppliedPolicy:
        return self._get_locked(topology_id)  # dict and attribute reads are atomic: no lock on the Route path

    def _get_locked(self, topology_id: str) -> AppliedPolicy:
        e = self._entries.get(topology_id)
        if e is not None:
            return e.current
        d = self._entries.get(DEFAULT_TOPOLOGY)
        base = d.current if d is not None else AppliedPolicy(DEFAULT_TOPOLOGY, make_policy(DEFAULT_POLICY))
        return replace(base, topology_id=topology_id, inherited_default=topology_id != DEFAULT_TOPOLOGY)

    def set(self, topology_id: str, policy: Policy, reason: str = "", actor: str = "") -> tuple[AppliedPolicy, AppliedPolicy]:
        if not isinstance(topology_id, str):
            raise PolicyError("topology_id must be a string")
        with self._lock:
            previous = self._get_locked(topology_id)
            own = self._entries.get(topology_id)
            if own is None and len(self._entries) >= MAX_POLICY_TOPOLOGIES:
                raise PolicyError(f"{MAX_POLICY_TOPOLOGIES} topologies already hold a policy of their own; "
                                  "set the default policy (topology_id \"\") instead")
            version = (own.current.version if own else 0) + 1
            applied = AppliedPolicy(topology_id, policy, version, time.time(), reason, actor)
            if own is None:
                own = self._entries[topology_id] = _Entry(applied)
            else:
                own.history.append(own.current)
                own.current = applied
            live = len(self._entries)
        if self._journal is not None:
            self._journal.append(applied.to_dict(), live, self._snapshot)
        log.info("policy for %r: %s -> %s (v%d, %s: %s)", topology_id or "<default>", previous.policy.label(),
                 policy.label(), version, actor or "?", reason)
        if self._on_change:
            self._on_change(applied, previous)
        return applied, previous

    def active_policy_vector(self, topology_id: str = DEFAULT_TOPOLOGY) -> np.ndarray:
        return self.get(topology_id).policy.to_vector()


#: The process-wide store that ``tellm serve`` uses unless it is given its own.
DEFAULT_STORE = PolicyStore()


def active_policy_vector(topology_id: str = DEFAULT_TOPOLOGY, store: PolicyStore | None = None) -> np.ndarray:
    """float32 [4]: the policy vector for a Route request on ``topology_id`` that names no policy."""
    return (store or DEFAULT_STORE).active_policy_vector(topology_id)


# --------------------------------------------------------------------------- gRPC glue
def _pb():
    from tellm.v1 import policy_pb2, policy_pb2_grpc

    return policy_pb2, policy_pb2_grpc


def applied_to_pb(a: AppliedPolicy):
    pb, _ = _pb()
    return pb.AppliedPolicy(topology_id=a.topology_id, policy_name=a.policy.name, params=dict(a.policy.params),
                            policy_vector=a.policy.to_vector().tolist(), version=a.version,
                            applied_at_unix_seconds=a.applied_at_unix_seconds, reason=a.reason, actor=a.actor,
                            inherited_default=a.inherited_default)


def applied_from_pb(m) -> AppliedPolicy:
    return AppliedPolicy(m.topology_id, make_policy(m.policy_name, dict(m.params)), int(m.version),
                         float(m.applied_at_unix_seconds), m.reason, m.actor, bool(m.inherited_default))


def make_servicer(store: PolicyStore, audit=None, limiter: ChangeLimiter | None = None):
    """The PolicyService servicer. SetPolicy is an admin call: size limits, parameter bounds and the
    per-topology rate limit (``limiter``) apply to every caller, and each call, accepted or refused,
    goes to ``audit`` (tellm.security.audit.AdminAudit)."""
    from tellm.security.audit import AdminAudit

    pb, pb_grpc = _pb()
    audit = audit or AdminAudit()
    limiter = limiter or ChangeLimiter()

    class PolicyServicer(pb_grpc.PolicyServiceServicer):
        def SetPolicy(self, request, context):
            what = {"topology_id": request.topology_id, "policy": request.policy_name,
                    "params": dict(request.params), "reason": request.reason, "actor": request.actor}
            try:
                too_long = check_sizes(request.topology_id, request.reason, request.actor)
                if too_long:
                    raise PolicyError(too_long)
                policy = make_policy(request.policy_name, dict(request.params))
                limiter.admit(request.topology_id)
                applied, previous = store.set(request.topology_id, policy, request.reason, request.actor)
            except (PolicyError, RateLimited) as exc:
                audit.record(context, "SetPolicy", what, f"refused: {exc}")
                code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, RateLimited) else \
                    grpc.StatusCode.INVALID_ARGUMENT
                context.abort(code, str(exc))
            audit.record(context, "SetPolicy", what, f"ok: {previous.policy.label()} -> {policy.label()} "
                                                     f"(version {applied.version})")
            return pb.SetPolicyResponse(policy=applied_to_pb(applied), previous=applied_to_pb(previous))

        def GetPolicy(self, request, context):
            return pb.GetPolicyResponse(policy=applied_to_pb(store.get(request.topology_id)))

        def ListPolicies(self, request, context):
            return pb.ListPoliciesResponse(policies=[
                pb.PolicyDescription(name=d["name"], description=d["description"], params=[
                    pb.ParamBounds(name=p["name"], min=p["min"], max=p["max"], default=p["default"],
                                   description=p["description"]) for p in d["params"]])
                for d in list_policies()])

    return PolicyServicer()


def add_policy_service(server: grpc.Server, store: PolicyStore | None = None, audit=None,
                       limiter: ChangeLimiter | None = None) -> PolicyStore:
    """Register PolicyService on ``server`` (e.g. the inference server) and return its store."""
    _, pb_grpc = _pb()
    store = store or DEFAULT_STORE
    pb_grpc.add_PolicyServiceServicer_to_server(make_servicer(store, audit, limiter), server)
    return store


def serve(address: str = "127.0.0.1:50052", store: PolicyStore | None = None, max_workers: int = 4,
          security=None, audit=None, limiter: ChangeLimiter | None = None):
    """Start a standalone PolicyService server (``security``: tellm.security.settings.ServerSecurity);
    returns (server, bound port, store)."""
    from concurrent import futures

    from tellm.security.settings import ServerSecurity

    security = security or ServerSecurity()
    security.check_bind(address.rsplit(":", 1)[0])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         interceptors=security.interceptors(audit))
    store = add_policy_service(server, store or PolicyStore(), audit, limiter)
    port = security.add_port(server, address)
    if port == 0:
        raise OSError(f"cannot bind the policy service to {address}")
    server.start()
    return server, port, store


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
    """Client of PolicyService (the daemon, the MCP server and scripts use it); errors are PolicyServiceError."""

    def __init__(self, address: str = "127.0.0.1:50051", timeout_seconds: float = 2.0, security=None):
        from tellm.security.settings import PLAINTEXT

        _, pb_grpc = _pb()
        self.address = address
        self.timeout_seconds = timeout_seconds
        self._channel = (security or PLAINTEXT).channel(address)
        self._stub = pb_grpc.PolicyServiceStub(self._channel)

    def set_policy(self, policy: Policy, topology_id: str = DEFAULT_TOPOLOGY, reason: str = "",
                   actor: str = "") -> tuple[AppliedPolicy, AppliedPolicy]:
        pb, _ = _pb()
        r = _rpc(self._stub.SetPolicy, pb.SetPolicyRequest(topology_id=topology_id, policy_name=policy.name,
                                                     params=dict(policy.params), reason=reason, actor=actor),
                                 timeout=self.timeout_seconds)
        return applied_from_pb(r.policy), applied_from_pb(r.previous)

    def get_policy(self, topology_id: str = DEFAULT_TOPOLOGY) -> AppliedPolicy:
        pb, _ = _pb()
        return applied_from_pb(_rpc(self._stub.GetPolicy, pb.GetPolicyRequest(topology_id=topology_id),
                                    timeout=self.timeout_seconds).policy)

    def list_policies(self) -> list[dict]:
        pb, _ = _pb()
        r = _rpc(self._stub.ListPolicies, pb.ListPoliciesRequest(), timeout=self.timeout_seconds)
        return [{"name": d.name, "description": d.description,
                 "params": [{"name": p.name, "min": p.min, "max": p.max, "default": p.default,
                             "description": p.description} for p in d.params]} for d in r.policies]

    def close(self) -> None:
        self._channel.close()
