"""ONNX Runtime sessions of the head specialised to one topology (specialise.py), and their cache.

``TopologyHead.run`` takes a batch of TMs of its topology ([B, P] demands, [B, L] link states,
[B, 4] policies) and returns [B, ...] outputs. The topology's tables are handed to ONNX Runtime once,
as OrtValues on the session's device. On CUDA a batch of one replays a captured CUDA graph
(``enable_cuda_graph``, fixed device buffers bound through IOBinding). Where a captured batch is
clearly faster than a plain one (timed at build on a batch of ``_PROBE_BATCH``: small, launch-bound
topologies), one graph is captured per batch size in ``CUDA_GRAPH_BATCHES`` that fits
``MAX_BATCH_SLOTS`` (each its own ``gpu_graph_id`` and buffers, ``graph_batches``), and a batch runs on
the smallest captured size that holds it, padded with copies of its first row. Other batches run as
they are on a second session of the same graph, without capture.

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

from .fastpath import MAX_BATCH_SLOTS
from .graph_passes import rank_matched_scalars
from .specialise import DYNAMIC_INPUTS, MLP_DTYPES, OUTPUTS, FoldedWeights, build_specialised
from .specialise_tables import Tables, build_tables

log = logging.getLogger("tellm.inference.topology_head")

#: Topologies this small (P*K*(L+1), the dense incidence) are timed on the CPU too on a CUDA server.
COMPARE_LIMIT = 1 << 22
#: Batch sizes captured as CUDA graphs (on a topology whose batch holds at most MAX_BATCH_SLOTS paths).
CUDA_GRAPH_BATCHES = (1, 2, 4, 8, 16, 32)
#: Runs of a new ``gpu_graph_id`` before its replay is certain (ORT runs it plain, then captures).
_GRAPH_WARMUP_RUNS = 3
#: ``mlp_dtype`` choices: ``auto`` is float16 for a CUDA head over a sparse layout (csr, bucketed: large
#: topologies, where the MLP's bytes and products are a large share of a run; MLU within about 1e-5 of
#: float32 as measured in benchmarks/README.md) and float32 elsewhere (small topologies are bound by
#: kernel launches, and the CPU has no faster half-precision products).
MLP_DTYPE_CHOICES = ("auto", *MLP_DTYPES)
#: ORT graph fusions left out on CUDA: the fused bias + GELU kernel ran the first MLP layer's activation
#: at about half the speed of ORT's separate Add and Gelu kernels (NVIDIA H200, onnxruntime-gpu 1.31).
CUDA_DISABLED_OPTIMIZERS = ("BiasGeluFusion",)
#: The batch timed captured vs plain at build, and how much faster captured must be to capture the rest.
_PROBE_BATCH = 8
_GRAPH_GAIN = 0.67


class BuildCancelled(Exception):
    """The head being built is no longer wanted (its topology or model was replaced)."""


def _no_check() -> None:
    return None


def head_graph(weights: FoldedWeights, tables: Tables, mlp_dtype: str, provider: str,
               cpu_pass: bool = True) -> bytes:
    """The serialised specialised graph as a head on ``provider`` runs it: on the CPU with its scalar
    constants shaped for ORT's fast broadcasting kernels (graph_passes.py; the CUDA graph is unchanged;
    ``cpu_pass=False`` leaves them as built, for comparison)."""
    model = build_specialised(weights, tables, mlp_dtype)
    if provider == "cpu" and cpu_pass:
        rank_matched_scalars(model)
    return model.SerializeToString()


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
    graph_session: object | None = None  # CUDA: the session replaying captured CUDA graphs
    graph_batches: tuple[int, ...] = ()  # the batch sizes captured on graph_session
    mlp_dtype: str = "float32"  # the refinement MLP's float type
    _values: dict = field(default_factory=dict, repr=False)
    _graphs: dict = field(default_factory=dict, repr=False)  # batch -> (binding, inputs, outputs, run options)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, weights: FoldedWeights, topo, provider: str = "cpu", threads: int = 0,
              cuda_graph: bool = True, layout: str = "auto", mlp_dtype: str = "auto",
              check: Callable[[], None] = _no_check, cpu_pass: bool = True) -> "TopologyHead":
        """``check`` runs between the build's phases and may raise (e.g. ``BuildCancelled``) to stop it;
        ``mlp_dtype`` is the refinement MLP's float type (MLP_DTYPE_CHOICES); ``cpu_pass`` (``head_graph``)."""
        import onnxruntime as ort

        t0 = time.perf_counter()
        tables = build_tables(topo.capacity_bps, topo.latency_seconds, topo.path_pair, topo.inc_path,
                              topo.inc_link, topo.num_pairs, layout, provider=provider)
        check()
        if mlp_dtype == "auto":
            mlp_dtype = "float16" if provider == "cuda" and tables.layout != "dense" else "float32"
        data = head_graph(weights, tables, mlp_dtype, provider, cpu_pass)
        check()
        if provider == "cuda":
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(data, opts, providers=["CUDAExecutionProvider"],
                                           disabled_optimizers=list(CUDA_DISABLED_OPTIMIZERS))
            graph_session = _graph_session(data, opts) if cuda_graph else None
            values = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for n, a in tables.arrays.items()}
        else:
            session = ort.InferenceSession(data, cpu_session_options(threads), providers=["CPUExecutionProvider"])
            graph_session, values = None, dict(tables.arrays)
        check()
        head = cls(tables, provider, 0.0, session, graph_session, mlp_dtype=mlp_dtype, _values=values)
        if provider == "cuda":
            head._capture(check)
        head.build_seconds = time.perf_counter() - t0
        return head

    def _capture(self, check: Callable[[], None]) -> None:
        """Warm up the plain session, then capture CUDA graphs: batch one always, larger batches only where
        a captured batch of ``_PROBE_BATCH`` runs clearly faster than the plain session. A topology whose
        runs are bound by the GPU's memory traffic (not by kernel launches) gains nothing from a captured
        batch, and padding a batch up to a captured size would then only add work."""
        self._run_plain(*self.sample_inputs(1), None)
        if self.graph_session is None:
            return
        fits = [b for b in CUDA_GRAPH_BATCHES if b * self.tables.num_pairs * self.tables.k <= MAX_BATCH_SLOTS]
        if not self._try_capture(1, check):
            self.graph_session = None
            return
        if _PROBE_BATCH not in fits or not self._try_capture(_PROBE_BATCH, check):
            return
        probe = self.sample_inputs(_PROBE_BATCH)
        graph_s = _time_calls(lambda: self._run_graph(_PROBE_BATCH, dict(zip(DYNAMIC_INPUTS, probe))))
        plain_s = _time_calls(lambda: self._run_plain(*probe, None))
        if graph_s > _GRAPH_GAIN * plain_s:
            self.graph_batches = (1,)
            log.info("batches of %d: captured %.2f ms vs plain %.2f ms; only batches of one are captured",
                     _PROBE_BATCH, graph_s * 1e3, plain_s * 1e3)
            return
        for b in fits:
            if b not in self.graph_batches and not self._try_capture(b, check):
                break
        self.graph_batches = tuple(sorted(self.graph_batches))

    def _try_capture(self, b: int, check: Callable[[], None]) -> bool:
        check()
        try:
            for _ in range(_GRAPH_WARMUP_RUNS):
                self._run_graph(b, dict(zip(DYNAMIC_INPUTS, self.sample_inputs(b))))
        except Exception as exc:  # noqa: BLE001 - keep the sizes captured so far; plain runs do the rest
            log.warning("CUDA graph capture at batch %d failed (%s); batches of that size run without it",
                        b, str(exc).splitlines()[0][:200])
            self._graphs.pop(b, None)
            return False
        self.graph_batches += (b,)
        return True

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
        n = demand.shape[0]
        size = graph_size(n, self.graph_batches)
        if self.graph_session is None or size is None:
            return self._run_plain(*feeds.values(), run_options)
        out = self._run_graph(size, pad_rows(feeds, size))
        return {k: v[:n] for k, v in out.items()} if size > n else out

    def _run_plain(self, demand, link_up, policy, run_options) -> dict[str, np.ndarray]:
        feeds = dict(zip(DYNAMIC_INPUTS, (demand, link_up, policy)))
        binding = self.session.io_binding()
        for name, value in self._values.items():
            binding.bind_ortvalue_input(name, value)
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        for name in OUTPUTS:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding, run_options)
        return dict(zip(OUTPUTS, binding.copy_outputs_to_cpu()))

    def _run_graph(self, batch: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replay (or, on its first runs, capture) the CUDA graph of one batch size."""
        import onnxruntime as ort

        with self._lock:  # the graphs share the session's memory: one replay at a time
            if batch not in self._graphs:
                t = self.tables
                binding = self.graph_session.io_binding()
                ins = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for n, a in feeds.items()}
                shapes = {"split": [batch, t.num_paths], "link_load_bps": [batch, t.num_links], "mlu": [batch]}
                outs = {n: ort.OrtValue.ortvalue_from_shape_and_type(s, np.float32, "cuda", 0)
                        for n, s in shapes.items()}
                for name, value in {**self._values, **ins}.items():
                    binding.bind_ortvalue_input(name, value)
                for name, value in outs.items():
                    binding.bind_ortvalue_output(name, value)
                opts = ort.RunOptions()
                opts.add_run_config_entry("gpu_graph_id", str(batch))  # one graph per size; 0 is ORT's own
                self._graphs[batch] = (binding, ins, outs, opts)
            binding, ins, outs, opts = self._graphs[batch]
            for name, arr in feeds.items():
                ins[name].update_inplace(arr)
            self.graph_session.run_with_iobinding(binding, opts)
            return dict(zip(OUTPUTS, binding.copy_outputs_to_cpu()))


@dataclass(eq=False)
class HeadCache:
    """Specialised heads per (served model, registered topology); dropped with either."""

    threads: int = 0
    cuda_graph: bool = True
    mlp_dtype: str = "auto"
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
            candidates.append(TopologyHead.build(w, topo, "cuda", cuda_graph=self.cuda_graph, mlp_dtype=self.mlp_dtype,
                                                 check=check))
        small = topo.num_pairs * (topo.num_links + 1) * max(1, int(np.bincount(topo.path_pair).max())) <= COMPARE_LIMIT
        if model.device == "cpu" or small:
            check()
            candidates.append(TopologyHead.build(w, topo, "cpu", threads=self.threads, mlp_dtype=self.mlp_dtype,
                                                 check=check))
        check()
        head = min(candidates, key=_time_one) if len(candidates) > 1 else candidates[0]
        log.info("topology %s: specialised head on %s (%s layout, %s MLP, K=%d, H=%d, %.1f MB of tables, CUDA graphs "
                 "for batches of %s) built in %.2f s", topo.name or topo.content_hash, head.provider, head.tables.layout,
                 head.mlp_dtype, head.tables.k, head.tables.h, head.tables.nbytes / 1e6,
                 "/".join(map(str, head.graph_batches)) or "none", sum(c.build_seconds for c in candidates))
        return head


def graph_size(n: int, captured: tuple[int, ...]) -> int | None:
    """The captured batch size a batch of ``n`` runs in: the smallest that holds it (None: none does)."""
    return min((b for b in captured if b >= n), default=None)


def pad_rows(feeds: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Fill each [n, ...] input up to ``size`` rows with copies of its first row (outputs of those are dropped;
    a copy of a real TM keeps every padded row's run finite)."""
    return {k: a if a.shape[0] == size else np.concatenate([a, np.repeat(a[:1], size - a.shape[0], axis=0)])
            for k, a in feeds.items()}


def _graph_session(data: bytes, opts):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(data, opts, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})],
                                    disabled_optimizers=list(CUDA_DISABLED_OPTIMIZERS))
    except Exception as exc:  # noqa: BLE001 - e.g. a node the CUDA provider cannot take: no capture
        log.warning("no CUDA graph session (%s)", str(exc).splitlines()[0][:200])
        return None


def _time_calls(fn: Callable[[], object], runs: int = 3) -> float:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _time_one(head: TopologyHead, runs: int = 5) -> float:
    inputs = head.sample_inputs(1)
    return _time_calls(lambda: head.run(*inputs), runs)
