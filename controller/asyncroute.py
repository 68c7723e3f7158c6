"""The router call off the control interval's critical path.

A model behind the inference service can take longer than the poll interval (a busy CPU, a big
network). The control loop therefore does not wait for it past a budget: one worker thread runs
``router.route`` (the whole fallback chain of routers.py: a model timeout still falls back to the
last good routing, then LP or ECMP), and each interval

1. submits the interval's routing input, unless a request is still in flight (requests are never
   duplicated or queued: the next interval submits its own, fresher input);
2. waits for the request in flight at most its budget;
3. applies the freshest *completed* routing, if it still fits the network (the caller checks: same
   path set and link state; a link failure meanwhile was already handled by the local failover).

A fast router (LP, ECMP, an idle model) completes within the budget: the interval behaves as a plain
call. A slow one is applied one or more intervals late, and the routing's age says by how much.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .routers import Router, Routing, RoutingInput


@dataclass(frozen=True)
class CompletedRouting:
    routing: Routing
    inp: RoutingInput
    submitted_monotonic: float  # when its input was taken (the age of a routing counts from here)
    finished_monotonic: float


class RoutingWorker:
    """At most one ``router.route`` call in flight, on a daemon thread."""

    def __init__(self, router: Router):
        self.router = router
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()
        self._in_flight_since: float | None = None
        self._result: CompletedRouting | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return not self._done.is_set()

    def in_flight_seconds(self, now_monotonic: float | None = None) -> float | None:
        since = self._in_flight_since
        if since is None:
            return None
        return (time.monotonic() if now_monotonic is None else now_monotonic) - since

    def submit(self, inp: RoutingInput) -> bool:
        """Start routing ``inp``; False (nothing started) while a request is in flight."""
        with self._lock:
            if not self._done.is_set():
                return False
            self._done.clear()
            self._in_flight_since = time.monotonic()
        threading.Thread(target=self._run, args=(inp, self._in_flight_since), daemon=True,
                         name="tellm-router").start()
        return True

    def _run(self, inp: RoutingInput, submitted: float) -> None:
        try:
            routing = self.router.route(inp)
            done, error = CompletedRouting(routing, inp, submitted, time.monotonic()), None
        except BaseException as exc:  # re-raised on the control loop thread by take()
            done, error = None, exc
        with self._lock:
            if done is not None:
                self._result = done
            self._error = error
            self._in_flight_since = None
            self._done.set()

    def take(self, wait_seconds: float = 0.0) -> CompletedRouting | None:
        """The freshest completed routing not taken yet (waiting up to ``wait_seconds`` for the request in
        flight), or None. A router that raised re-raises here."""
        if wait_seconds > 0:
            self._done.wait(wait_seconds)
        with self._lock:
            result, error = self._result, self._error
            self._result = self._error = None
        if error is not None:
            raise error
        return result
