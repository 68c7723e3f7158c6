"""``tellm policy run``: poll network state, guard the last change, decide, apply.

Each poll reads the state (controller API or Prometheus), feeds the Actuator (which rolls back a
change that made MLU worse within its window) and, every ``decide_every`` polls, asks the engine
(rules or LLM) for a decision. Nothing here is on the forwarding path: the daemon only calls
SetPolicy, so when it fails or stops the last policy stays and routing continues.
"""

from __future__ import annotations

import logging
import threading
import time

from .guard import ActionRejected
from .state import StateError
from .tools import PolicyTools

log = logging.getLogger(__name__)


class PolicyDaemon:
    def __init__(self, tools: PolicyTools, engine, poll_interval_seconds: float = 5.0, decide_every: int = 6):
        if poll_interval_seconds <= 0 or decide_every < 1:
            raise ValueError("poll interval must be > 0 and decide_every >= 1")
        self.tools = tools
        self.engine = engine
        self.poll_interval_seconds = poll_interval_seconds
        self.decide_every = decide_every
        self.polls = 0

    def step(self) -> dict:
        """One poll: read state, guard, maybe decide. Never raises for operational failures."""
        self.polls += 1
        out: dict = {"poll": self.polls}
        try:
            state = self.tools.refresh()
        except StateError as exc:
            log.warning("state unavailable: %s", exc)
            return {**out, "error": str(exc)}
        out["mlu"] = state.mlu
        try:
            rb = self.tools.actuator.observe(state)
            if rb:
                out["rollback"] = rb
            try:
                self.tools.actuator.metrics.set_active(self.tools.actuator.current().policy)
            except ActionRejected as exc:
                log.warning("%s", exc)
            if (self.polls - 1) % self.decide_every == 0 and not rb:
                out["decision"] = self.engine.decide(self.tools)
        except ActionRejected as exc:  # policy service down during a rollback
            log.error("%s", exc)
            out["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - an engine bug must not kill the guard loop
            log.exception("decision engine failed")
            out["error"] = f"{type(exc).__name__}: {exc}"
        return out

    def run(self, stop: threading.Event | None = None, max_polls: int | None = None, on_step=None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set() and (max_polls is None or self.polls < max_polls):
            t0 = time.monotonic()
            out = self.step()
            if on_step:
                on_step(out)
            stop.wait(max(0.0, self.poll_interval_seconds - (time.monotonic() - t0)))


class ObserveOnly:
    """Engine for the MCP server's background loop: keeps state, history and automatic rollback
    running while an outside agent makes the decisions."""

    name = "observe"

    def decide(self, tools: PolicyTools) -> dict:
        return {"engine": self.name, "action": "none"}


def start_background(tools: PolicyTools, poll_interval_seconds: float) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    d = PolicyDaemon(tools, ObserveOnly(), poll_interval_seconds, decide_every=1)
    t = threading.Thread(target=d.run, args=(stop,), name="policy-observer", daemon=True)
    t.start()
    return stop, t
