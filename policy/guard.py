"""Guardrails around every policy change: validation, rate limit, audit, automatic rollback, dry run.

``Actuator`` is the only code path that calls SetPolicy. Engines (rules, LLM, MCP clients) ask it;
it refuses with ``ActionRejected`` (a clear message, nothing applied) when the request breaks a rule.
Every request, accepted or not, is one JSONL line in the audit log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from tellm.contract.policies import DEFAULT_TOPOLOGY, AppliedPolicy, Policy, PolicyError, make_policy
from tellm.contract.policy_client import PolicyServiceError

from .state import NetworkState

log = logging.getLogger(__name__)


class ActionRejected(Exception):
    """A policy action refused by a guardrail (message says which); nothing was applied."""


class PolicyBackend(Protocol):
    def set_policy(self, policy: Policy, topology_id: str = ..., reason: str = ...,
                   actor: str = ...) -> tuple[AppliedPolicy, AppliedPolicy]: ...
    def get_policy(self, topology_id: str = ...) -> AppliedPolicy: ...


@dataclass(frozen=True)
class GuardConfig:
    min_change_interval_seconds: float = 300.0  # at most one change per interval
    rollback_threshold: float = 0.10  # relative MLU worsening that triggers a rollback ...
    rollback_min_increase: float = 0.05  # ... and at least this much absolute MLU (measurement noise floor)
    rollback_window_seconds: float = 60.0  # how long after a change a regression rolls it back
    dry_run: bool = False
    topology_id: str = DEFAULT_TOPOLOGY

    def __post_init__(self) -> None:
        for name in ("min_change_interval_seconds", "rollback_threshold", "rollback_min_increase",
                     "rollback_window_seconds"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0 or v != v:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")


#: Label values the counters below can take; each series is exported at 0 from the start (Prometheus
#: convention) so that increase()/rate() see the first event and dashboards show "none yet" as 0.
ROLLBACK_TRIGGERS = ("regression", "requested")
GUARDED_TOOLS = ("apply_policy", "rollback")


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.info = Gauge("tellm_policy_info", "1 for the active policy (label: policy with parameters)",
                          ["policy"], registry=r)
        self.changes = Counter("tellm_policy_changes_total", "Policy changes applied by the daemon", registry=r)
        self.rollbacks = Counter("tellm_policy_rollbacks_total", "Policy rollbacks (automatic or requested)",
                                 ["trigger"], registry=r)
        self.rejected = Counter("tellm_policy_actions_rejected_total", "Policy actions refused by a guardrail",
                                ["tool"], registry=r)
        for trigger in ROLLBACK_TRIGGERS:
            self.rollbacks.labels(trigger=trigger)
        for tool in GUARDED_TOOLS:
            self.rejected.labels(tool=tool)
        self._label: str | None = None

    def set_active(self, policy: Policy) -> None:
        label = policy.label()
        if label == self._label:
            return
        if self._label is not None:
            self.info.remove(self._label)
        self.info.labels(policy=label).set(1)
        self._label = label


class AuditLog:
    """Append-only JSONL: timestamp, engine, tool, args, the stated reason, outcome (one line per action)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, engine: str, tool: str, args: Any, reason: str, outcome: str, **extra) -> dict:
        entry = {"timestamp": time.time(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "engine": engine, "tool": tool, "args": args, "reason": reason, "outcome": outcome, **extra}
        if self.path:
            line = json.dumps(entry, default=str)
            with self._lock, self.path.open("a") as f:
                f.write(line + "\n")
        return entry

    def read(self) -> list[dict]:
        if not self.path or not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]


@dataclass
class _PendingChange:
    at: float
    before: AppliedPolicy
    after: Policy
    baseline_mlu: float | None


class Actuator:
    """Applies policies through a PolicyBackend (the gRPC PolicyClient) under the guardrails."""

    def __init__(self, backend: PolicyBackend, config: GuardConfig = GuardConfig(), audit: AuditLog | None = None,
                 metrics: PolicyMetrics | None = None, clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.config = config
        self.audit = audit or AuditLog(None)
        self.metrics = metrics or PolicyMetrics()
        self.clock = clock
        self._lock = threading.RLock()
        self._last_change_at: float | None = None
        self._pending: _PendingChange | None = None  # watched for automatic rollback (within the window)
        self._last: _PendingChange | None = None  # the last change made here: what `rollback` undoes
        self._last_state: NetworkState | None = None
        self._dry_run_policy: Policy | None = None

    # ---------------------------------------------------------------- queries
    def current(self) -> AppliedPolicy:
        try:
            return self.backend.get_policy(self.config.topology_id)
        except PolicyServiceError as exc:
            raise ActionRejected(str(exc)) from None

    def seconds_until_next_change(self) -> float:
        if self._last_change_at is None:
            return 0.0
        return max(0.0, self.config.min_change_interval_seconds - (self.clock() - self._last_change_at))

    # ---------------------------------------------------------------- actions
    def apply(self, name: Any, params: Any, reason: Any, engine: str) -> dict:
        """Validate and apply; returns the outcome dict. Raises ActionRejected (audited) on refusal."""
        args = {"policy": name, "params": params}
        with self._lock:
            try:
                if not isinstance(reason, str) or not reason.strip():
                    raise ActionRejected("apply_policy needs a non-empty 'reason' (it is audited)")
                try:
                    policy = make_policy(name, params)
                except PolicyError as exc:
                    raise ActionRejected(str(exc)) from None
                current = self.current()
                if current.policy == policy:
                    self.audit.record(engine, "apply_policy", args, reason, "unchanged")
                    return {"applied": False, "outcome": "unchanged", "policy": policy.to_dict()}
                wait = self.seconds_until_next_change()
                if wait > 0:
                    raise ActionRejected(f"rate limit: at most one change per {self.config.min_change_interval_seconds:g} s;"
                                         f" next change allowed in {wait:.0f} s")
            except ActionRejected as exc:
                self.metrics.rejected.labels(tool="apply_policy").inc()
                self.audit.record(engine, "apply_policy", args, reason if isinstance(reason, str) else repr(reason),
                                  f"rejected: {exc}")
                raise
            if self.config.dry_run:
                self.audit.record(engine, "apply_policy", args, reason, "dry_run: not applied",
                                  previous=current.policy.to_dict())
                return {"applied": False, "outcome": "dry_run", "policy": policy.to_dict(),
                        "previous": current.policy.to_dict()}
            try:
                applied, previous = self.backend.set_policy(policy, self.config.topology_id, reason,
                                                            actor=f"tellm-policy/{engine}")
            except PolicyServiceError as exc:
                self.audit.record(engine, "apply_policy", args, reason, f"failed: {exc}")
                raise ActionRejected(str(exc)) from None
            self._last_change_at = self.clock()
            base = self._last_state.mlu if self._last_state is not None else None
            self._pending = self._last = _PendingChange(self._last_change_at, previous, policy, base)
            self.metrics.changes.inc()
            self.metrics.set_active(policy)
            self.audit.record(engine, "apply_policy", args, reason, "applied", version=applied.version,
                              previous=previous.policy.to_dict(), baseline_mlu=base)
            return {"applied": True, "outcome": "applied", "policy": policy.to_dict(), "version": applied.version,
                    "previous": previous.policy.to_dict()}

    def rollback(self, reason: Any, engine: str, trigger: str = "requested") -> dict:
        """Return to the policy that was active before the last change made here."""
        with self._lock:
            pending = self._last
            try:
                if not isinstance(reason, str) or not reason.strip():
                    raise ActionRejected("rollback needs a non-empty 'reason' (it is audited)")
                if pending is None:
                    raise ActionRejected("nothing to roll back: this daemon has made no change since it started "
                                         "(or the last one was already rolled back)")
                active = self.current().policy
                if active != pending.after:
                    raise ActionRejected(f"not rolling back: the active policy {active.label()} is not the one this "
                                         f"daemon applied ({pending.after.label()}); someone else changed it")
            except ActionRejected as exc:
                self.metrics.rejected.labels(tool="rollback").inc()
                self.audit.record(engine, "rollback", {}, reason if isinstance(reason, str) else repr(reason),
                                  f"rejected: {exc}")
                raise
            target = pending.before.policy
            if self.config.dry_run:
                self.audit.record(engine, "rollback", {"to": target.to_dict()}, reason, "dry_run: not applied",
                                  trigger=trigger)
                return {"applied": False, "outcome": "dry_run", "policy": target.to_dict()}
            try:
                applied, _ = self.backend.set_policy(target, self.config.topology_id, f"rollback: {reason}",
                                                     actor=f"tellm-policy/{engine}")
            except PolicyServiceError as exc:
                self.audit.record(engine, "rollback", {"to": target.to_dict()}, reason, f"failed: {exc}",
                                  trigger=trigger)
                raise ActionRejected(str(exc)) from None
            self._pending = self._last = None
            # A rollback counts as a change for the rate limit: no flapping straight back.
            self._last_change_at = self.clock()
            self.metrics.rollbacks.labels(trigger=trigger).inc()
            self.metrics.set_active(target)
            self.audit.record(engine, "rollback", {"to": target.to_dict(), "from": pending.after.to_dict()}, reason,
                              "applied", trigger=trigger, version=applied.version)
            return {"applied": True, "outcome": "rolled_back", "policy": target.to_dict(), "version": applied.version}

    def observe(self, state: NetworkState) -> dict | None:
        """Feed a fresh state; rolls back automatically when MLU regressed within the window after a change."""
        with self._lock:
            self._last_state = state
            p = self._pending
            if p is None:
                return None
            age = self.clock() - p.at
            if age > self.config.rollback_window_seconds:
                self._pending = None  # survived its window: keep it
                self.audit.record("guard", "confirm", {"policy": p.after.to_dict()}, "no regression within window",
                                  "kept", mlu=state.mlu, baseline_mlu=p.baseline_mlu)
                return None
            if p.baseline_mlu is None:
                p.baseline_mlu = state.mlu
                return None
            limit = max(p.baseline_mlu * (1 + self.config.rollback_threshold),
                        p.baseline_mlu + self.config.rollback_min_increase)
            if state.mlu > limit:
                reason = (f"MLU {state.mlu:.3f} rose above {limit:.3f} (baseline {p.baseline_mlu:.3f}, threshold "
                          f"{self.config.rollback_threshold:.0%}) {age:.0f} s after switching to {p.after.label()}")
                log.warning("automatic rollback: %s", reason)
                return self.rollback(reason, engine="guard", trigger="regression")
            return None
