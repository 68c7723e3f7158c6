"""The active policy per topology, and the gRPC PolicyService that sets it.

``tellm serve`` hosts a store beside the TE service: the command layer builds it, registers
PolicyService with ``add_policy_service`` and hands ``store.active_policy_vector`` to the inference
server, which calls it for every Route request that carries no explicit policy. The policy daemon
only ever calls SetPolicy, so forwarding never depends on it: if it dies, the last policy stays.
``tellm policy serve`` runs the service on its own (demos, tests, controllers that read the policy
themselves).
"""

from __future__ import annotations

import json
import logging
import threading
import time
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

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    current: AppliedPolicy
    history: list[AppliedPolicy] = field(default_factory=list)


class PolicyStore:
    """Thread-safe map topology id -> active policy ("" = default), optionally persisted as JSON so a
    restarted server comes back with the last policy."""

    def __init__(self, state_file: str | Path | None = None,
                 on_change: Callable[[AppliedPolicy, AppliedPolicy], None] | None = None):
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._state_file = Path(state_file) if state_file else None
        self._on_change = on_change
        if self._state_file and self._state_file.exists():
            self._load()

    def _load(self) -> None:
        try:
            doc = json.loads(self._state_file.read_text())
            for tid, d in doc.get("policies", {}).items():
                pol = make_policy(d["policy"]["name"], d["policy"]["params"])
                self._entries[tid] = _Entry(AppliedPolicy(tid, pol, int(d["version"]), float(d["applied_at_unix_seconds"]),
                                                          d.get("reason", ""), d.get("actor", "")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged state file must not stop the inference server: start from the default.
            log.error("policy state file %s unreadable (%s); starting with the default policy", self._state_file, exc)
            self._entries.clear()

    def _save(self) -> None:
        if not self._state_file:
            return
        doc = {"policies": {tid: e.current.to_dict() for tid, e in self._entries.items()}}
        tmp = self._state_file.with_name(self._state_file.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(self._state_file)

    def get(self, topology_id: str = DEFAULT_TOPOLOGY) -> AppliedPolicy:
        with self._lock:
            return self._get_locked(topology_id)

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
            version = (own.current.version if own else 0) + 1
            applied = AppliedPolicy(topology_id, policy, version, time.time(), reason, actor)
            if own is None:
                own = self._entries[topology_id] = _Entry(applied)
            else:
                own.history.append(own.current)
                own.current = applied
            self._save()
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
def make_servicer(store: PolicyStore):
    class PolicyServicer(pb_grpc.PolicyServiceServicer):
        def SetPolicy(self, request, context):
            try:
                policy = make_policy(request.policy_name, dict(request.params))
            except PolicyError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            applied, previous = store.set(request.topology_id, policy, request.reason, request.actor)
            return pb.SetPolicyResponse(policy=applied_to_pb(applied), previous=applied_to_pb(previous))

        def GetPolicy(self, request, context):
            return pb.GetPolicyResponse(policy=applied_to_pb(store.get(request.topology_id)))

        def ListPolicies(self, request, context):
            return pb.ListPoliciesResponse(policies=policy_descriptions_to_pb(list_policies()))

    return PolicyServicer()


def add_policy_service(server: grpc.Server, store: PolicyStore | None = None) -> PolicyStore:
    """Register PolicyService on ``server`` (e.g. the inference server) and return its store."""
    store = store or DEFAULT_STORE
    pb_grpc.add_PolicyServiceServicer_to_server(make_servicer(store), server)
    return store


def serve(address: str = "127.0.0.1:50052", store: PolicyStore | None = None, max_workers: int = 4):
    """Start a standalone PolicyService server; returns (server, bound port, store)."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    store = add_policy_service(server, store or PolicyStore())
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the policy service to {address}")
    server.start()
    return server, port, store
