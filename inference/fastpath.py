"""The service's fast path: per-topology specialised heads, with concurrent same-topology Routes batched.

``FastPath.register`` runs at RegisterTopology: it records which graph serves the topology now and
queues the build of its specialised head (head_builds.py: one build at a time, in the background),
so registration returns at once. Until the head is built, ``FastPath.route`` returns None and the
caller runs the generic graph; afterwards ``route`` runs the request through the topology's batcher.
A model reload queues the builds for the new model on each topology's next Route. A build that fails
is logged and the generic graph keeps serving that topology; a build whose topology or model was
replaced in the meantime is stopped or dropped.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .batcher import Batcher
from .session import _cuda_thread

log = logging.getLogger("tellm.inference.fastpath")

#: Most candidate-path slots (batch x pairs x K) in one run: bounds the batch, the captured CUDA graph
#: sizes (topology_head.py) and so the run's intermediates (~2 GB per MLP layer).
MAX_BATCH_SLOTS = 1 << 23

#: Key of a route result holding time.perf_counter() when its run started (after queueing).
RUN_STARTED = "run_started"


@dataclass(frozen=True)
class HeadState:
    """Which graph serves one registered topology (for metrics and GetModelInfo)."""

    provider: str  # the head's provider ("cpu", "cuda"), or the model's for the generic graph
    layout: str  # "dense" or "csr"; "generic" while the generic graph serves
    build_seconds: float  # 0 for the generic graph
    building: bool  # a specialised build is queued or running
    mlp_dtype: str = ""  # the specialised head's refinement MLP float type; "" for the generic graph
    cuda_graph_batches: tuple[int, ...] = ()  # batch sizes it replays as captured CUDA graphs


@dataclass(eq=False)
class FastPath:
    slots: threading.BoundedSemaphore  # the service's model-run slots
    metrics: object | None = None  # ServiceMetrics
    max_batch: int = 32
    window_seconds: float = 0.0
    threads: int = 0
    cuda_graph: bool = True
    mlp_dtype: str = "auto"  # the specialised heads' refinement MLP float type (topology_head.MLP_DTYPE_CHOICES)
    #: (model, topology arrays, topology id) -> whether the pair is still served/registered; default: always.
    is_current: Callable[[object, object, str], bool] = lambda model, topo, topology_id: True
    max_pending_builds: int = 64
    cache: object | None = field(init=False)  # topology_head.HeadCache; None: generic graph only
    builds: object | None = field(init=False)  # head_builds.BuildQueue
    batcher: Batcher = field(init=False)
    _failed: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)

    def __post_init__(self) -> None:
        self.batcher = Batcher(window_seconds=self.window_seconds)
        self.builds = None
        try:
            from .head_builds import BuildQueue
            from .topology_head import HeadCache
        except ImportError as exc:  # e.g. the onnx package missing: the generic graph still serves
            log.warning("per-topology graphs are off (%s); serving the generic graph", exc)
            self.cache = None
        else:
            self.cache = HeadCache(threads=self.threads, cuda_graph=self.cuda_graph, mlp_dtype=self.mlp_dtype)
            self.builds = BuildQueue(self.cache.build, self.is_current, self._finish,
                                     max_pending=self.max_pending_builds)

    def register(self, model, topo, topology_id: str):
        """At RegisterTopology: the head serving ``topo`` now (None: the generic graph), its build queued."""
        if self.cache is None:
            if self.metrics is not None:
                self.metrics.set_topology_head(topology_id, None, model)
            return None
        with self.builds.commit_lock:  # a finishing build cannot interleave with this registration's state
            head = self.cache.get(model, topo)
            if self.metrics is not None:
                self.metrics.set_topology_head(topology_id, head, model)
            if head is None and topo not in self._failed.get(model, ()):
                self.builds.submit(model, topo, topology_id)
        return head

    def head(self, model, topo, topology_id: str = ""):
        """The built head of ``topo`` for ``model``, or None (a build is queued if none was tried)."""
        if self.cache is None:
            return None
        head = self.cache.get(model, topo)
        if head is None and topo not in self._failed.get(model, ()) and not self.builds.busy(model, topo):
            self.register(model, topo, topology_id or topo.content_hash)
        return head

    def state(self, model, topo) -> HeadState:
        head = self.cache.get(model, topo) if self.cache is not None else None
        if head is not None:
            return HeadState(head.provider, head.tables.layout, head.build_seconds, False, head.mlp_dtype,
                             head.graph_batches if head.graph_session is not None else ())
        building = self.builds is not None and self.builds.busy(model, topo)
        return HeadState(model.provider, "generic", 0.0, building)

    def wait_builds(self, timeout: float | None = None) -> bool:
        """Wait until no build is queued or running (tests, benchmarks); False on timeout."""
        return self.builds.wait_idle(timeout) if self.builds is not None else True

    def close(self, wait_seconds: float = 0.0) -> None:
        """Stop building heads; wait up to ``wait_seconds`` for a build in progress to stop."""
        if self.builds is not None and not self.builds.close(wait_seconds):
            log.warning("a specialised build was still running after %.0f s at shutdown", wait_seconds)

    def _finish(self, model, topo, topology_id: str, result) -> None:  # under builds.commit_lock
        if isinstance(result, BaseException) or result is None:
            if isinstance(result, BaseException):
                log.warning("topology %s: no specialised head (%s: %s); serving the generic graph",
                            topology_id, type(result).__name__, result)
            self._failed.setdefault(model, weakref.WeakSet()).add(topo)
            return
        self.cache.put(model, topo, result)
        if self.metrics is not None:
            self.metrics.set_topology_head(topology_id, result, model)

    def route(self, model, reg, demand: np.ndarray, link_up: np.ndarray, policy: np.ndarray,
              timeout: float | None, run_options=None) -> dict[str, np.ndarray] | None:
        """One request's outputs; ``run_options`` stops the run when the request is alone in its batch."""
        head = self.head(model, reg.arrays, reg.topology_id)
        if head is None:
            return None
        t = head.tables
        max_batch = max(1, min(self.max_batch, MAX_BATCH_SLOTS // max(1, t.num_pairs * t.k)))

        def run_batch(calls):
            if not self.slots.acquire(timeout=timeout):
                raise TimeoutError("the deadline passed while waiting for a free model slot")
            started = time.perf_counter()
            try:
                d, u, p, opts = zip(*calls)
                d, u, p = np.stack(d), np.stack(u), np.stack(p)
                opts = opts[0] if len(calls) == 1 else None  # a shared run is never stopped for one caller
                if head.provider == "cuda":
                    out = _cuda_thread().submit(head.run, d, u, p, opts).result()
                else:
                    out = head.run(d, u, p, opts)
            finally:
                self.slots.release()
            if self.metrics is not None:
                self.metrics.batch_size.observe(len(calls))
            return [{**{k: v[i] for k, v in out.items()}, RUN_STARTED: started} for i in range(len(calls))]

        return self.batcher.submit((id(model), id(head)), (demand, link_up, policy, run_options), run_batch, max_batch, timeout)
