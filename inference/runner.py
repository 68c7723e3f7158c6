"""Minimal ONNX Runtime runner for the TE head (numpy only; no torch).

Reusable by the inference service, ``tellm eval --router model`` and the benchmarks: load once, then
``route(inputs)`` with the dict from ``tellm.contract.onnx_io.onnx_inputs``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tellm.contract.vocabulary import INPUT_NAMES, OUTPUT_NAMES

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "tellm-te.onnx"


class ModelError(RuntimeError):
    """The ONNX model cannot be loaded or run; the message names the file."""


@dataclass(frozen=True)
class HeadOutput:
    split: np.ndarray  # float32 [Np]
    link_load_bps: np.ndarray  # float32 [L]
    mlu: float


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TEHeadRunner:
    """An ONNX Runtime session over the TE head with the contract's inputs/outputs."""

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, providers: list[str] | None = None,
                 intra_op_threads: int | None = None):
        import onnxruntime as ort

        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise ModelError(f"{self.model_path}: no such model file")
        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = int(intra_op_threads)
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
            raise ModelError(f"{self.model_path}: ONNX Runtime cannot load it ({exc})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if set(names) != set(INPUT_NAMES):
            raise ModelError(f"{self.model_path}: inputs {names} do not match the contract {INPUT_NAMES}")
        card = self.model_path.with_suffix(".json")
        self.card = json.loads(card.read_text()) if card.exists() else {}
        self.version = str(self.card.get("version", self.model_path.stem))

    def route(self, inputs: dict[str, np.ndarray]) -> HeadOutput:
        split, loads, mlu = self.session.run(list(OUTPUT_NAMES), {k: inputs[k] for k in INPUT_NAMES})
        return HeadOutput(split, loads, float(mlu[0]))
