"""ONNX Runtime sessions of the head specialised to one topology (specialise.py), and their cache.

``TopologyHead.run`` takes a batch of TMs of its topology ([B, P] demands, [B, L] link states,
[B, 4] policies) and returns [B, ...] outputs. The topology's tables are handed to ONNX Runtime once,
as OrtValues on the session's device. On CUDA a batch of one replays a captured CUDA graph
(``enable_cuda_graph``, fixed device buffers bound through IOBinding); larger batches take a
second session of the same graph without capture.

``HeadCache`` builds heads for the model being served (``build``, called off the request path by
fastpath.py's background builder) and chooses the provider per topology: on a CUDA server, small
topologies are timed on both providers and keep the faster one. A build checks between its phases
whether it is still wanted (``check`` raises ``BuildCancelled``) so that a replaced or evicted
topology stops its build early.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .specialise import DYNAMIC_INPUTS, OUTPUTS, FoldedWeights, build_specialised
from .specialise_tables import Tables, build_tables

log = logging.getLogger("tellm.inference.topology_head")

#: Topologies this small (P*K*(L+1), the dense incidence) are timed on the CPU too on a CUDA server.
COMPARE_LIMIT = 1 << 22
CUDA_GRAPH_BATCH = 1


class BuildCancelled(Exception):
    """The head being built is no longer wanted (its topology or model was replaced)."""


def _no_check() -> None:
    return None


def cpu_session_options(threads: int):
    """CPU provider options measured fastest for this graph on a small shared machine."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads > 0:
        opts.intra_op_num_threads = threads
    # A spinning thread pool steals the cores other requests and the gRPC threads need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


@dataclass(eq=False)
class TopologyHead:
    """The specialised head of one (model, topology) on one provider."""

    tables: Tables
    provider: str  # "cpu" or "cuda"
    build_seconds: float
    session: object
    graph_session: object | None = None  # CUDA: batch-of-one session replaying a CUDA graph
    _values: dict = field(default_factory=dict, repr=False)
    _graph: tuple | None = field(default=None, repr=False)  # (binding, inputs, outputs) of the graph session
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, weights: FoldedWeights, topo, provider: str = "cpu", threads: int = 0,
              cuda_graph: bool = True, layout: str = "auto",
              check: Callable[[], None] = _no_check) -> "TopologyHead":
        """``check`` runs between the build's phases and may raise (e.g. ``BuildCancelled``) to stop it."""
        import onnxruntime as ort

        t0 = time.perf_counter()
        tables = build_tables(topo.capacity_bps, topo.latency_seconds, topo.path_pair, topo.inc_path,
                              topo.inc_link, topo.num_pairs, layout, provider=provider)
        check()
        data = build_specialised(weights, tables).SerializeToString()
        check()
        if provider == "cuda":
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(data, opts, providers=["CUDAExecutionProvider"])
            graph_session = _graph_session(data, opts) if cuda_graph else None
            values = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for n, a in tables.arrays.items()}
        else:
            session = ort.InferenceSession(data, cpu_session_options(threads), providers=["CPUExecutionProvider"])
            graph_session, values = None, dict(tables.arrays)
        check()
        head = cls(tables, provider, 0.0, session, graph_session, values)
        for _ in range(2 if provider == "cuda" else 0):  # warm-up, then the CUDA graph's capture
            try:
                head.run(*head.sample_inputs(1))
            except Exception as exc:  # noqa: BLE001 - no capture: plain CUDA runs still work
                if head.graph_session is None:
                    raise
                log.warning("CUDA graph capture failed (%s); running without it", exc)
                head.graph_session, head._graph = None, None
        head.build_seconds = time.perf_counter() - t0
        return head

    def sample_inputs(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = self.tables
        return (np.ones((batch, t.num_pairs), np.float32), np.ones((batch, t.num_links), np.float32),
                np.zeros((batch, 4), np.float32))

    def run(self, demand: np.ndarray, link_up: np.ndarray, policy: np.ndarray,
            run_options=None) -> dict[str, np.ndarray]:
        """One run over a batch: demand [B, P], link_up [B, L], policy [B, 4] (float32)."""
        feeds = dict(zip(DYNAMIC_INPUTS, (np.ascontiguousarray(a, dtype=np.float32) for a in (demand, link_up, policy))))
        if self.provider == "cpu":
            return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), dict(self._values, **feeds), run_options)))
        if self.graph_session is not None and demand.shape[0] == CUDA_GRAPH_BATCH:
            return self._run_graph(feeds)
        binding = self.session.io_binding()
        for name, value in self._values.items():
            binding.bind_ortvalue_input(name, value)
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        for name in OUTPUTS:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding, run_options)
        return dict(zip(OUTPUTS, binding.copy_outputs_to_cpu()))

    def _run_graph(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        with self._lock:  # one set of fixed device buffers
            if self._graph is None:
                t = self.tables
                binding = self.graph_session.io_binding()
                ins = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for n, a in feeds.items()}
                shapes = {"split": [1, t.num_paths], "link_load_bps": [1, t.num_links], "mlu": [1]}
                outs = {n: ort.OrtValue.ortvalue_from_shape_and_type(s, np.float32, "cuda", 0)
                        for n, s in shapes.items()}
                for name, value in {**self._values, **ins}.items():
                    binding.bind_ortvalue_input(name, value)
                for name, value in outs.items():
                    binding.bind_ortvalue_output(name, value)
                self._graph = (binding, ins, outs)
            binding, ins, outs = self._graph
            for name, arr in feeds.items():
                ins[name].update_inplace(arr)
            self.graph_session.run_with_iobinding(binding)
            return dict(zip(OUTPUTS, binding.copy_outputs_to_cpu()))


@dataclass(eq=False)
class HeadCache:
    """Specialised heads per (served model, registered topology); dropped with either."""

    threads: int = 0
    cuda_graph: bool = True
    _weights: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    _heads: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def weights(self, model) -> FoldedWeights | None:
        """The served model's weights in specialisable form; None when the file is not a padded head."""
        with self._lock:
            if model not in self._weights:
                import onnx

                try:
                    self._weights[model] = FoldedWeights.from_onnx(onnx.load(str(model.path), load_external_data=False))
                except Exception as exc:  # noqa: BLE001 - any other graph is served through the generic path
                    log.warning("model %s cannot be specialised per topology (%s); serving the generic graph",
                                model.version, exc)
                    self._weights[model] = None
            return self._weights[model]

    def get(self, model, topo) -> TopologyHead | None:
        per_model = self._heads.get(model)
        return per_model.get(topo) if per_model is not None else None

    def put(self, model, topo, head: TopologyHead) -> None:
        with self._lock:
            self._heads.setdefault(model, weakref.WeakKeyDictionary())[topo] = head

    def build(self, model, topo, check: Callable[[], None] = _no_check) -> TopologyHead | None:
        """A head of ``topo`` for ``model`` (not yet served: ``put`` serves it); None when the model is not
        specialisable. Raises what ``check`` raises, or the build's own failure."""
        w = self.weights(model)
        if w is None:
            return None
        candidates = []
        if model.device == "cuda":
            candidates.append(TopologyHead.build(w, topo, "cuda", cuda_graph=self.cuda_graph, check=check))
        small = topo.num_pairs * (topo.num_links + 1) * max(1, int(np.bincount(topo.path_pair).max())) <= COMPARE_LIMIT
        if model.device == "cpu" or small:
            check()
            candidates.append(TopologyHead.build(w, topo, "cpu", threads=self.threads, check=check))
        check()
        head = min(candidates, key=_time_one) if len(candidates) > 1 else candidates[0]
        log.info("topology %s: specialised head on %s (%s layout, K=%d, H=%d, %.1f MB of tables) built in %.2f s",
                 topo.name or topo.content_hash, head.provider, head.tables.layout, head.tables.k, head.tables.h,
                 head.tables.nbytes / 1e6, sum(c.build_seconds for c in candidates))
        return head


def _graph_session(data: bytes, opts):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(data, opts, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
    except Exception as exc:  # noqa: BLE001 - e.g. a node the CUDA provider cannot take: no capture
        log.warning("no CUDA graph session (%s)", str(exc).splitlines()[0][:200])
        return None


def _time_one(head: TopologyHead, runs: int = 5) -> float:
    inputs = head.sample_inputs(1)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        head.run(*inputs)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))
