"""Sending a plan to the switches: barrier rounds, per-switch flow control and a rate limit.

A plan's batches are encoded in bulk (ofbulk) round by round and sent per switch in chunks; each
chunk ends with a barrier request. At most two chunks (``SendLimits.window_messages`` messages) per
switch are unconfirmed at any time, so however big a plan is, a switch never holds more than one
window of our messages it has not processed, and a slow switch does not hold up the others. An
optional rate limit caps each switch's messages per second. A round is done when every switch it
touched has answered its last barrier (or the barrier timed out, which is logged); the next round
starts only then (make-before-break across switches, see planner.BARRIER_ROUND).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import ofbulk
from .core import DEFAULT_OF_MAX_MESSAGES_PER_SECOND, DEFAULT_OF_WINDOW_MESSAGES
from .planner import FIRST_DELETE_ROUND, Plan

log = logging.getLogger("tellm.controller")

BARRIER_TIMEOUT_SECONDS = 2.0
#: A packet classified to an old group just before the move can still be inside the datapath
#: (dp_hash recirculates it through the group once more, and cached datapath flows refer to it);
#: deleting the old group under it drops it. Old groups and labels go only after this drain.
OLD_STATE_DRAIN_SECONDS = 0.5
_IN_FLIGHT_CHUNKS = 2


@dataclass(frozen=True)
class SendLimits:
    #: Messages per switch sent but not yet confirmed by a barrier reply (two chunks of half this).
    window_messages: int = DEFAULT_OF_WINDOW_MESSAGES
    #: Messages per second per switch; 0 = no cap (the window alone paces the sender).
    max_messages_per_second: float = DEFAULT_OF_MAX_MESSAGES_PER_SECOND

    def __post_init__(self) -> None:
        if self.window_messages < 2:
            raise ValueError("the OpenFlow window must be at least 2 messages")
        if self.max_messages_per_second < 0:
            raise ValueError("the OpenFlow rate limit must be >= 0 (0 = none)")


@dataclass
class SendReport:
    messages: int = 0
    bytes: int = 0
    barriers: int = 0
    rounds: int = 0
    seconds: float = 0.0
    timed_out: int = 0  # barriers not answered in time


@dataclass
class _Switch:
    dp: object
    chunks: deque  # of (bytes, messages)
    in_flight: deque  # of (barrier reply event, deadline)
    next_send: float = 0.0


class _Reply(threading.Event):
    """A barrier reply; setting it also wakes the sender (which waits for any switch's reply)."""

    def __init__(self, progress: threading.Event):
        super().__init__()
        self._progress = progress

    def set(self) -> None:
        super().set()
        self._progress.set()


class PlanSender:
    """Sends plans. ``barrier(dp, reply)`` sends a barrier request to ``dp`` and arranges for
    ``reply.set()`` when its reply arrives (the glue's barrier handler)."""

    def __init__(self, barrier: Callable[[object, threading.Event], None], limits: SendLimits = SendLimits()):
        self.barrier, self.limits = barrier, limits
        self._xid = 1 << 30  # bulk message xids (barriers use the datapath's own counter)
        self._progress = threading.Event()
        self._deferred: tuple[float, list] | None = None  # (not before, delete rounds) of the last plan

    def _next_xids(self, n: int) -> int:
        base = self._xid
        self._xid = (self._xid + n) % (1 << 31) or (1 << 30)
        return base

    def estimate_seconds(self, plan: Plan) -> float:
        """Lower bound on the send time under the rate limit (the busiest switch's messages / rate)."""
        rate = self.limits.max_messages_per_second
        if rate <= 0 or plan.num_ops == 0:
            return 0.0
        dpids = np.concatenate([b.dpid for _, batches in plan.steps for b in batches])
        return float(np.bincount(np.unique(dpids, return_inverse=True)[1]).max()) / rate

    def send(self, plan: Plan, datapaths: dict[int, object], stop: threading.Event | None = None,
             defer_deletes: bool = False) -> SendReport:
        """Send the plan round by round. With ``defer_deletes`` the rounds that remove old state are
        kept (``pending_deletes``) instead of waiting out the drain here: ``flush`` sends them once
        the drain has passed, and every later send flushes first, so they always precede the next
        plan's messages (which may re-add a label or group id they delete)."""
        report = SendReport()
        t0 = time.perf_counter()
        self.flush(datapaths, stop, report)
        rounds = plan.rounds()
        for i, (rnd, batches) in enumerate(rounds):
            if rnd >= FIRST_DELETE_ROUND and report.rounds:
                if defer_deletes:
                    self._deferred = (time.monotonic() + OLD_STATE_DRAIN_SECONDS, rounds[i:])
                    break
                if (stop or threading.Event()).wait(OLD_STATE_DRAIN_SECONDS):
                    break
            self._send_batches(batches, datapaths, report)
        report.seconds = time.perf_counter() - t0
        return report

    @property
    def pending_deletes(self) -> bool:
        return self._deferred is not None

    @property
    def deletes_due(self) -> float | None:
        """time.monotonic() when the deferred delete rounds may go, None when there are none."""
        return None if self._deferred is None else self._deferred[0]

    def flush(self, datapaths: dict[int, object], stop: threading.Event | None = None,
              report: SendReport | None = None) -> SendReport:
        """Send deferred delete rounds (after waiting out the rest of their drain)."""
        report = report or SendReport()
        if self._deferred is None:
            return report
        not_before, rounds = self._deferred
        self._deferred = None
        wait = not_before - time.monotonic()
        if wait > 0 and (stop or threading.Event()).wait(wait):
            return report
        for _, batches in rounds:
            self._send_batches(batches, datapaths, report)
        return report

    def _send_batches(self, batches, datapaths: dict[int, object], report: SendReport) -> None:
        encoded = ofbulk.encode_plan_round(batches, self._next_xids(sum(len(b) for b in batches)))
        self._send_round(encoded, datapaths, report)
        report.rounds += 1

    def _chunks(self, encoded: list[ofbulk.Encoded], datapaths: dict[int, object]) -> dict[int, _Switch]:
        """Per switch, its messages of the round in batch order, cut into chunks of half a window."""
        per = max(1, self.limits.window_messages // _IN_FLIGHT_CHUNKS)
        switches: dict[int, _Switch] = {}
        for enc in encoded:
            for dpid, a, b in enc.switch_ranges():
                dp = datapaths.get(dpid)
                if dp is None:
                    continue
                sw = switches.setdefault(dpid, _Switch(dp, deque(), deque()))
                for c in range(a, b, per):
                    e = min(b, c + per)
                    sw.chunks.append((enc.chunk(c, e), e - c))
        return switches

    def _send_round(self, encoded: list[ofbulk.Encoded], datapaths: dict[int, object], report: SendReport) -> None:
        switches = self._chunks(encoded, datapaths)
        rate = self.limits.max_messages_per_second
        while switches:
            self._progress.clear()
            now = time.monotonic()
            wake_at = now + BARRIER_TIMEOUT_SECONDS
            for dpid in list(switches):
                sw = switches[dpid]
                while sw.in_flight and (sw.in_flight[0][0].is_set() or now > sw.in_flight[0][1]):
                    done, _ = sw.in_flight.popleft()
                    if not done.is_set():
                        log.warning("no barrier reply from dpid=%d within %.1f s", dpid, BARRIER_TIMEOUT_SECONDS)
                        report.timed_out += 1
                if sw.chunks and len(sw.in_flight) < _IN_FLIGHT_CHUNKS and now >= sw.next_send:
                    data, n = sw.chunks.popleft()
                    sw.dp.send(data)
                    reply = _Reply(self._progress)
                    sw.in_flight.append((reply, now + BARRIER_TIMEOUT_SECONDS))
                    self.barrier(sw.dp, reply)
                    report.messages += n
                    report.bytes += len(data)
                    report.barriers += 1
                    if rate > 0:
                        sw.next_send = max(sw.next_send, now) + n / rate
                if not sw.chunks and not sw.in_flight:
                    del switches[dpid]
                    continue
                if sw.in_flight:
                    wake_at = min(wake_at, sw.in_flight[0][1])
                if sw.chunks and len(sw.in_flight) < _IN_FLIGHT_CHUNKS:
                    wake_at = min(wake_at, sw.next_send)
            if switches:
                self._progress.wait(max(0.0, wake_at - time.monotonic()))
