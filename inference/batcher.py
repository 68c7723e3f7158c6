"""Continuous batching: concurrent calls with the same key share one run.

The first caller of a key runs at once with whatever is queued (a batch of one when alone, so a lone
caller waits for nothing); callers that arrive while a run of their key is in flight queue up, and
when it ends the first of them runs the next batch with every queued call (at most ``max_batch``).
An optional ``window_seconds`` lets a leader wait a little for company before it runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence


@dataclass(eq=False)
class _Call:
    args: tuple
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    done: bool = False
    result: object = None
    error: BaseException | None = None


@dataclass(eq=False)
class Batcher:
    window_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _queues: dict = field(default_factory=dict)
    _busy: set = field(default_factory=set)

    def submit(self, key: Hashable, args: tuple, run_batch: Callable[[Sequence[tuple]], Sequence[object]],
               max_batch: int, timeout: float | None = None) -> object:
        """Run ``args`` in a batch of calls with ``key``; ``run_batch`` maps a list of args to results.

        Raises TimeoutError when ``timeout`` passes before the call's batch starts.
        """
        call = _Call(args)
        with self._lock:
            self._queues.setdefault(key, []).append(call)
            if key not in self._busy:
                self._busy.add(key)
                call.lead = True
        if not call.lead:
            if not call.wake.wait(timeout):
                with self._lock:
                    queue = self._queues.get(key, [])
                    if call in queue and not call.lead:
                        queue.remove(call)
                        raise TimeoutError("the deadline passed while waiting for a batched run")
                call.wake.wait()
            if not call.lead:
                return _outcome(call)
        self._lead(key, run_batch, max(1, max_batch))
        return _outcome(call)

    def _lead(self, key, run_batch, max_batch: int) -> None:
        if self.window_seconds > 0:
            with self._lock:
                short = len(self._queues[key]) < max_batch
            if short:
                time.sleep(self.window_seconds)
        with self._lock:
            queue = self._queues[key]
            batch = queue[:max_batch]
            del queue[:max_batch]
        try:
            results = run_batch([c.args for c in batch])
            for c, r in zip(batch, results, strict=True):
                c.result = r
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the failure
            for c in batch:
                c.error = exc
        with self._lock:
            queue = self._queues.get(key)
            nxt = queue[0] if queue else None
            if nxt is not None:
                nxt.lead = True
            else:
                self._busy.discard(key)
                self._queues.pop(key, None)
        for c in batch:
            c.done = True
            if not c.lead:
                c.wake.set()
        if nxt is not None:
            nxt.wake.set()


def _outcome(call: _Call) -> object:
    if call.error is not None:
        raise call.error
    return call.result
