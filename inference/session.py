"""The one ONNX loader: a TE model file as an ONNX Runtime session with the tellm TE interface.

``load_model`` is how every part of tellm opens a model (``tellm serve``, ``tellm eval --router
model``, the export check, the benchmarks and the tests): it checks the interface, reads the model
card and raises ``ModelError`` with a one-line reason. ``LoadedModel.route`` runs one request from
the dict of ``features.onnx_inputs``.

``ModelHolder`` keeps the served model swappable at run time: ``ModelHolder.current`` is a plain attribute read, so a request takes one consistent model for its
whole life while a reload builds the next session beside it and swaps the reference; the old
session is freed when its last request finishes. A model that fails to load or lacks the
interface never replaces a working one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from tellm.contract.policies import DEFAULT_POLICY, canonical_name
from tellm.contract.vocabulary import INPUT_TYPES as REQUIRED_INPUTS
from tellm.contract.vocabulary import OUTPUT_NAMES as REQUIRED_OUTPUTS
from tellm.contract.vocabulary import POLICY_DIM

from .modelfile import DEFAULT_MAX_MODEL_BYTES, MAX_CARD_BYTES, read_capped, resolve_inside

log = logging.getLogger("tellm.inference.session")

ProviderChoice = Literal["auto", "cuda", "cpu"]


class ModelError(RuntimeError):
    """A model file that cannot be served (missing, unreadable, wrong interface)."""


class ModelRefused(ModelError):
    """The file was never read: missing, unreadable, not a regular file, too large or outside the
    model directory. The message says which, for the operator; callers get one generic answer."""


class ReloadBusy(ModelError):
    """Another model load is in progress; nothing was read."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class HeadOutput:
    split: np.ndarray  # float32 [Np]
    link_load_bps: np.ndarray  # float32 [L]
    mlu: float


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str
    shape: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    session: object  # onnxruntime.InferenceSession
    path: Path
    sha256: str
    version: str
    provider: str
    available_providers: tuple[str, ...]
    loaded_at_unix_seconds: float
    load_seconds: float
    policy_dim: int
    policies: dict[str, np.ndarray]
    card_json: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    file_stat: tuple[int, int, int]  # (mtime_ns, size, inode) when loaded
    load_count: int = 1
    # Per-topology inputs already placed on the model's device, dropped with the topology.
    _static: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)
    _static_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def device(self) -> str:
        return "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    @property
    def card(self) -> dict:
        """The model card (the JSON beside the model file); empty when there is none."""
        return json.loads(self.card_json) if self.card_json else {}

    def route(self, inputs: dict[str, np.ndarray]) -> HeadOutput:
        """One run on the inputs of ``features.onnx_inputs`` (extra keys are ignored)."""
        out = self.run({name: inputs[name] for name in REQUIRED_INPUTS})
        return HeadOutput(out["split"], out["link_load_bps"], float(np.asarray(out["mlu"]).reshape(-1)[0]))

    def run(self, feeds: dict[str, np.ndarray], run_options=None) -> dict[str, np.ndarray]:
        """Plain run with every input from host memory."""
        out = self.session.run(list(REQUIRED_OUTPUTS), feeds, run_options)
        return dict(zip(REQUIRED_OUTPUTS, out))

    def run_bound(self, key: object, static: dict[str, np.ndarray], dynamic: dict[str, np.ndarray],
                  run_options=None) -> dict[str, np.ndarray]:
        """Run with the per-topology inputs (``static``, identified by ``key``) kept on the device.

        On CUDA this is what makes large topologies fast: Kdl's incidence is ~0.8 GB of int64 that
        would otherwise cross PCIe on every request; here it is copied once per (model, topology).
        """
        if self.device == "cuda":
            # ORT's CUDA provider keeps per-thread state (stream, cuBLAS handle, memory) for every
            # thread that calls Run; gRPC's handler pool would multiply it until the GPU is full.
            return _cuda_thread().submit(self._run_bound, key, static, dynamic, run_options).result()
        return self._run_bound(key, static, dynamic, run_options)

    def _run_bound(self, key, static, dynamic, run_options=None) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        values = self._static.get(key)
        if values is None:
            with self._static_lock:
                values = self._static.get(key)
                if values is None:
                    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), self.device, 0)
                              for name, arr in static.items()}
                    self._static[key] = values
        binding = self.session.io_binding()
        for name, value in values.items():
            binding.bind_ortvalue_input(name, value)
        for name, arr in dynamic.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in REQUIRED_OUTPUTS:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding, run_options)
        return dict(zip(REQUIRED_OUTPUTS, binding.copy_outputs_to_cpu()))


# One thread runs every CUDA model run (created on first use by the executor).
_CUDA_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tellm-cuda")


def _cuda_thread() -> ThreadPoolExecutor:
    return _CUDA_THREAD


def _file_stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _card_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def _dim(d) -> str:
    return str(d) if d is not None else "?"


def _create_session(data: bytes, choice: ProviderChoice, threads: int):
    import onnxruntime as ort

    available = tuple(ort.get_available_providers())
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
    want_cuda = choice in ("auto", "cuda") and "CUDAExecutionProvider" in available
    if choice == "cuda" and not want_cuda:
        raise ModelError("--provider cuda: onnxruntime offers no CUDAExecutionProvider (it has "
                         f"{', '.join(available)}); "
                         "install onnxruntime-gpu")
    if want_cuda:
        try:
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()  # loads CUDA/cuDNN from the pip nvidia-* packages when present
            session = ort.InferenceSession(data, sess_options=opts,
                                           providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            if session.get_providers()[0] == "CUDAExecutionProvider":
                return session, available
            if choice == "cuda":
                raise ModelError("CUDAExecutionProvider is installed but could not start (see onnxruntime's log)")
            log.warning("CUDAExecutionProvider is installed but did not start; falling back to CPU")
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - any CUDA start failure falls back to the CPU provider
            if choice == "cuda":
                raise ModelError(f"CUDAExecutionProvider failed: {exc}") from exc
            log.warning("CUDAExecutionProvider failed (%s); falling back to CPUExecutionProvider", exc)
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"]), available


def load_model(path: str | os.PathLike, provider: ProviderChoice = "auto", threads: int = 0,
               load_count: int = 1, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> LoadedModel:
    """Load and check a model file; raises ModelError with a one-line reason (ModelRefused when the
    file was not read: see modelfile.read_capped)."""
    path = Path(path).expanduser().resolve()
    t0 = time.perf_counter()
    try:
        data, stat = read_capped(path, max_bytes)
    except FileNotFoundError as exc:
        raise ModelRefused(f"cannot read model file {path}: no such model file") from exc
    except OSError as exc:
        raise ModelRefused(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    sha = hashlib.sha256(data).hexdigest()
    try:
        session, available = _create_session(data, provider, threads)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for a bad file
        raise ModelError(f"{path}: not a loadable ONNX model: {str(exc).splitlines()[0][:300]}") from exc
    inputs = tuple(TensorInfo(i.name, i.type, tuple(_dim(d) for d in i.shape)) for i in session.get_inputs())
    outputs = tuple(TensorInfo(o.name, o.type, tuple(_dim(d) for d in o.shape)) for o in session.get_outputs())
    got = {i.name: i.type for i in inputs}
    missing = [f"{n} ({t})" for n, t in REQUIRED_INPUTS.items() if got.get(n) != t]
    extra = sorted(set(got) - set(REQUIRED_INPUTS))
    missing_out = [n for n in REQUIRED_OUTPUTS if n not in {o.name for o in outputs}]
    if missing or extra or missing_out:
        raise ModelError(f"{path}: not the tellm TE interface (inputs missing or mistyped: {missing or 'none'}; "
                         f"unexpected inputs: {extra or 'none'}; outputs missing: {missing_out or 'none'})")
    policy_shape = next(i.shape for i in inputs if i.name == "policy")
    policy_dim = int(policy_shape[0]) if len(policy_shape) == 1 and policy_shape[0].isdigit() else POLICY_DIM

    card_json, card = "", {}
    card_file = _card_path(path)
    try:
        card_json = read_capped(card_file, MAX_CARD_BYTES)[0].decode()
    except FileNotFoundError:
        card_json = ""
    except (OSError, ValueError) as exc:
        raise ModelError(f"{card_file}: unreadable model card: {exc}") from exc
    if card_json:
        try:
            card = json.loads(card_json)
            if not isinstance(card, dict):
                raise ValueError("the card is not a JSON object")
        except ValueError as exc:
            raise ModelError(f"{card_file}: unreadable model card: {exc}") from exc
    # The all-zeros vector (plain min-MLU) is always accepted; card names are spelt canonically.
    policies = {DEFAULT_POLICY: np.zeros(policy_dim, dtype=np.float32)}
    for name, vec in (card.get("policies") or {}).items():
        arr = np.asarray(vec, dtype=np.float32).ravel() if isinstance(vec, (list, tuple)) else None
        if arr is None or arr.shape != (policy_dim,) or not np.all(np.isfinite(arr)):
            log.warning("%s: policy %r is not %d finite numbers; ignored", card_file, name, policy_dim)
            continue
        policies[canonical_name(str(name))] = arr
    card_version = str(card.get("version", "")).strip()
    version = f"{card_version}+{sha[:12]}" if card_version else sha[:12]
    session_provider = session.get_providers()[0]
    return LoadedModel(session=session, path=path, sha256=sha, version=version, provider=session_provider,
                       available_providers=available, loaded_at_unix_seconds=time.time(),
                       load_seconds=time.perf_counter() - t0, policy_dim=policy_dim, policies=policies,
                       card_json=card_json, inputs=inputs, outputs=outputs, file_stat=stat, load_count=load_count)


@dataclass(eq=False)
class ModelHolder:
    """The current model plus reload-on-change. Thread-safe; one load at a time, read and checked
    outside the lock that guards the swap (a slow or refused file never holds up anything else).

    ``model_dir``: where reloads by path may come from (default: the directory of the first model);
    ``max_bytes``: the largest model file read.
    """

    path: Path
    provider: ProviderChoice = "auto"
    threads: int = 0
    on_change: Callable[[LoadedModel], None] | None = None
    on_reload_failure: Callable[[str], None] | None = None
    model_dir: Path | None = None
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES
    current: LoadedModel | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loading: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    _failed_stat: tuple[int, int, int] | None = None
    _loads: int = 0

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser().resolve()
        self.model_dir = Path(self.model_dir or self.path.parent).expanduser().resolve()

    def load_initial(self) -> LoadedModel:
        with self._loading:
            model = load_model(self.path, self.provider, self.threads, load_count=1, max_bytes=self.max_bytes)
            with self._lock:
                self._loads = 1
                self._install(model)
            return model

    def _install(self, model: LoadedModel) -> None:
        self.current = model
        self.path = model.path
        log.info("serving model %s (version %s) on %s; loaded in %.2f s", model.path, model.version,
                 model.provider, model.load_seconds)
        if self.on_change:
            self.on_change(model)

    def reload(self, path: str | os.PathLike | None = None) -> tuple[LoadedModel, bool]:
        """Load ``path`` (default: the current path; relative paths are inside ``model_dir``) and swap it
        in when its content differs.

        Returns (model now serving, whether it changed); raises ModelRefused for a path outside
        ``model_dir`` or a file that is not readable as a regular file within the size cap, ReloadBusy
        while another load runs, ModelError for a file that cannot be served. The old model keeps
        serving on any error.
        """
        if not self._loading.acquire(blocking=False):
            raise ReloadBusy("another model load is in progress")
        try:
            try:
                target = resolve_inside(self.model_dir, path) if path else self.path
                model = load_model(target, self.provider, self.threads, load_count=self._loads + 1,
                                   max_bytes=self.max_bytes)
            except OSError as exc:  # outside the model directory
                self._fail(None, str(exc))
                raise ModelRefused(str(exc)) from None
            except ModelError as exc:
                self._fail(target, str(exc))
                raise
            self._failed_stat = None
            with self._lock:
                old = self.current
                if old is not None and model.sha256 == old.sha256 and model.path == old.path:
                    # Same bytes (e.g. touched, or rewritten identically): keep the warm session.
                    self.current = _restamp(old, model.file_stat)
                    return self.current, False
                self._loads += 1
                self._install(model)
                return model, True
        finally:
            self._loading.release()

    def _fail(self, target: Path | None, reason: str) -> None:
        if target is not None and target == self.path:
            self._failed_stat = _safe_stat(target)
        if self.on_reload_failure:
            self.on_reload_failure(reason)

    # ------------------------------------------------------------ file watching
    def start_watching(self, interval_seconds: float) -> None:
        if interval_seconds <= 0 or self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._watch, args=(interval_seconds,), name="model-watcher",
                                         daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    def _watch(self, interval_seconds: float) -> None:
        while not self._stop.wait(interval_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the watcher must survive anything and keep serving
                log.exception("model watcher")

    def poll_once(self) -> bool:
        """Reload when the model file's (mtime, size, inode) changed; True when a new model went in."""
        model = self.current
        if model is None:
            return False
        stat = _safe_stat(self.path)
        if stat is None or stat == model.file_stat or stat == self._failed_stat:
            return False  # gone (mid-replace), unchanged, or the same broken file as last time
        try:
            _, changed = self.reload()
        except ReloadBusy:
            return False  # a reload by RPC is running; the next poll looks again
        except ModelError as exc:
            log.error("model file changed but cannot be served; keeping version %s: %s", model.version, exc)
            return False
        return changed


def _safe_stat(path: Path) -> tuple[int, int, int] | None:
    try:
        return _file_stat(path)
    except OSError:
        return None


def _restamp(model: LoadedModel, stat: tuple[int, int, int]) -> LoadedModel:
    from dataclasses import replace

    return replace(model, file_stat=stat)
