"""Specialised heads built in the background, one at a time, while the generic graph serves.

``BuildQueue.submit`` returns at once; a single worker thread takes the queued (model, topology)
pairs in order and runs ``build`` for each. Before, during (``check``, between the build's phases)
and after a build it asks ``is_current`` whether the pair still matters (the model still served,
the topology id still registered with these arrays): a replaced or evicted topology's build is
skipped, stopped or its result dropped. ``finish`` is called with the result (a head, None when
the model cannot be specialised, or the exception) under ``commit_lock``, the lock the caller also
holds while it records registrations, so a late build never overwrites a newer registration's state.

The queue is bounded (``max_pending``): past it the oldest waiting build is dropped; that topology
keeps the generic graph until its next Route asks again.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from .topology_head import BuildCancelled

log = logging.getLogger("tellm.inference.head_builds")


@dataclass(frozen=True, eq=False)
class _Job:
    model: weakref.ref
    topo: weakref.ref
    topology_id: str


@dataclass(eq=False)
class BuildQueue:
    build: Callable[[object, object, Callable[[], None]], object]  # (model, topo, check) -> head or None
    is_current: Callable[[object, object, str], bool]  # (model, topo, topology id) -> still wanted
    finish: Callable[[object, object, str, object], None]  # (model, topo, topology id, head / None / exception)
    commit_lock: threading.Lock = field(default_factory=threading.Lock)
    max_pending: int = 64
    _pending: OrderedDict = field(default_factory=OrderedDict)  # (id(model), id(topo)) -> _Job
    _running: tuple | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _closed: bool = False

    def submit(self, model, topo, topology_id: str) -> bool:
        """Queue a build of ``topo`` for ``model``; False when it is already queued or running."""
        key = (id(model), id(topo))
        with self._cond:
            if self._closed or key in self._pending or key == self._running:
                return False
            self._pending[key] = _Job(weakref.ref(model), weakref.ref(topo), topology_id)
            while len(self._pending) > self.max_pending:
                _, dropped = self._pending.popitem(last=False)
                log.warning("topology %s: specialised build dropped (more than %d waiting); the generic graph "
                            "serves it", dropped.topology_id, self.max_pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="tellm-head-build", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def busy(self, model, topo) -> bool:
        """A build of ``topo`` for ``model`` is queued or running."""
        key = (id(model), id(topo))
        with self._cond:
            return key in self._pending or key == self._running

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._running is None, timeout)

    def close(self, wait_seconds: float = 0.0) -> bool:
        """Stop taking builds; the running one stops at its next check. Waits up to ``wait_seconds`` for
        the worker to end (a process must not exit while a build is inside ONNX Runtime); False if it
        has not."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and wait_seconds > 0:
            thread.join(wait_seconds)
            return not thread.is_alive()
        return thread is None or not thread.is_alive()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                key, job = self._pending.popitem(last=False)
                self._running = key
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def _run(self, job: _Job) -> None:
        model, topo = job.model(), job.topo()
        if model is None or topo is None or not self.is_current(model, topo, job.topology_id):
            return

        def check() -> None:
            if self._closed or not self.is_current(model, topo, job.topology_id):
                raise BuildCancelled(job.topology_id)

        try:
            result = self.build(model, topo, check)
        except BuildCancelled:
            log.info("topology %s: specialised build stopped (topology or model replaced)", job.topology_id)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: the generic graph keeps serving
            result = exc
        with self.commit_lock:
            if self._closed or not self.is_current(model, topo, job.topology_id):
                log.info("topology %s: specialised head dropped (topology or model replaced)", job.topology_id)
                return
            self.finish(model, topo, job.topology_id, result)
