"""The service's fast path: per-topology specialised heads, with concurrent same-topology Routes batched.

``FastPath.prepare`` runs at RegisterTopology (and on the first Route after a model reload) and
builds the topology's head (topology_head.py) for the served model; ``FastPath.route`` runs one
request through the topology's batcher, or returns None when the model cannot be specialised (any
graph that is not the padded TE head) so the caller uses the generic graph.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from .batcher import Batcher
from .session import _cuda_thread

log = logging.getLogger("tellm.inference.fastpath")

#: Largest batch x pairs x candidates in one run (bounds the run's intermediates: ~2 GB per MLP layer).
MAX_BATCH_SLOTS = 1 << 23
#: Key of a route result holding time.perf_counter() when its run started (after queueing).
RUN_STARTED = "run_started"


@dataclass(eq=False)
class FastPath:
    slots: threading.BoundedSemaphore  # the service's model-run slots
    metrics: object | None = None  # ServiceMetrics
    max_batch: int = 32
    window_seconds: float = 0.0
    threads: int = 0
    cuda_graph: bool = True
    cache: object | None = field(init=False)  # topology_head.HeadCache; None: generic graph only
    batcher: Batcher = field(init=False)
    _failed: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)

    def __post_init__(self) -> None:
        self.batcher = Batcher(window_seconds=self.window_seconds)
        try:
            from .topology_head import HeadCache
        except ImportError as exc:  # e.g. the onnx package missing: the generic graph still serves
            log.warning("per-topology graphs are off (%s); serving the generic graph", exc)
            self.cache = None
        else:
            self.cache = HeadCache(threads=self.threads, cuda_graph=self.cuda_graph)

    def prepare(self, model, topo, topology_id: str = ""):
        """The topology's head (topology_head.TopologyHead) for ``model``, built now if needed; None: serve
        the generic graph."""
        if self.cache is None:
            return None
        head = self.cache.get(model, topo)
        if head is not None or topo in self._failed.get(model, ()):
            return head
        try:
            head = self.cache.prepare(model, topo)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: the generic graph still serves
            log.warning("topology %s: no specialised head (%s: %s); serving the generic graph",
                        topology_id or topo.content_hash, type(exc).__name__, exc)
            head = None
        if head is None:
            self._failed.setdefault(model, weakref.WeakSet()).add(topo)
        elif self.metrics is not None:
            self.metrics.set_topology_head(topology_id or topo.content_hash, head)
        return head

    def route(self, model, reg, demand: np.ndarray, link_up: np.ndarray, policy: np.ndarray,
              timeout: float | None, run_options=None) -> dict[str, np.ndarray] | None:
        """One request's outputs; ``run_options`` stops the run when the request is alone in its batch."""
        head = self.prepare(model, reg.arrays, reg.topology_id)
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
