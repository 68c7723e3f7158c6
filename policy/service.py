"""The active policy per topology, and the gRPC PolicyService that sets it.

``tellm serve`` hosts a store beside the TE service: the command layer builds it, registers
PolicyService with ``add_policy_service`` and hands ``store.active_policy_vector`` to the inference
server, which calls it for every Route request that carries no explicit policy. The policy daemon
only ever calls SetPolicy, so forwarding never depends on it: if it dies, the last policy stays.
``tellm policy serve`` runs the service on its own (demos, tests, controllers that read the policy
themselves).
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

from tellm.contract.codec import applied_to_pb, policy_descriptions_to_pb
from tellm.contract.policies import (DEFAULT_POLICY, DEFAULT_TOPOLOGY, AppliedPolicy, Policy, PolicyError,
                                     list_policies, make_policy)
from tellm.contract.v1 import policy_pb2 as pb
from tellm.contract.v1 import policy_pb2_grpc as pb_grpc

from .admission import (HISTORY_LIMIT, MAX_POLICY_TOPOLOGIES, ChangeLimiter, PolicyJournal, RateLimited,
                        check_sizes)

log = logging.getLogger(__name__)


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


#: The process-wide store, used where no store is given.
DEFAULT_STORE = PolicyStore()


def active_policy_vector(topology_id: str = DEFAULT_TOPOLOGY, store: PolicyStore | None = None) -> np.ndarray:
    """float32 [POLICY_DIM]: the policy vector for a Route request on ``topology_id`` that names no policy."""
    return (store or DEFAULT_STORE).active_policy_vector(topology_id)


# --------------------------------------------------------------------------- gRPC glue
def make_servicer(store: PolicyStore, audit=None, limiter: ChangeLimiter | None = None):
    """The PolicyService servicer. SetPolicy is an admin call: size limits, parameter bounds and the
    per-topology rate limit (``limiter``) apply to every caller, and each call, accepted or refused,
    goes to ``audit`` (tellm.contract.security.audit.AdminAudit)."""
    from tellm.contract.security.audit import AdminAudit

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
            return pb.ListPoliciesResponse(policies=policy_descriptions_to_pb(list_policies()))

    return PolicyServicer()


def add_policy_service(server: grpc.Server, store: PolicyStore | None = None, audit=None,
                       limiter: ChangeLimiter | None = None) -> PolicyStore:
    """Register PolicyService on ``server`` (e.g. the inference server) and return its store."""
    store = store or DEFAULT_STORE
    pb_grpc.add_PolicyServiceServicer_to_server(make_servicer(store, audit, limiter), server)
    return store


def serve(address: str = "127.0.0.1:50052", store: PolicyStore | None = None, max_workers: int = 4,
          security=None, audit=None, limiter: ChangeLimiter | None = None):
    """Start a standalone PolicyService server (``security``: tellm.contract.security.settings.ServerSecurity);
    returns (server, bound port, store)."""
    from concurrent import futures

    from tellm.contract.security.settings import ServerSecurity

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
