"""Export a trained TE head checkpoint to ONNX (PyTorch; export only) and write its JSON card."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch

from tellm.contract.vocabulary import INPUT_NAMES, OUTPUT_NAMES

from .model import ModelConfig, TEHead
from .padded_graph import OPSET, HeadWeights, build_graph
from .session import sha256_file


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[TEHead, dict]:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    model = TEHead(ModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def export_onnx(model: TEHead, out_file: str | Path) -> Path:
    """Write the inference graph (inference/padded_graph.py) with ``model``'s weights and rounds."""
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    onnx_model = build_graph(HeadWeights.from_torch(model, model.cfg.rounds))
    out_file.write_bytes(onnx_model.SerializeToString())
    return out_file


def write_card(onnx_file: Path, ckpt: dict, extra: dict | None = None) -> Path:
    """The model card: training data, recipe, validation metrics, hash, opset (+ measured metrics)."""
    recipe = ckpt.get("recipe", {})
    card_file = onnx_file.with_suffix(".json")
    old = json.loads(card_file.read_text()) if card_file.exists() else {}
    card = {
        "name": recipe.get("name", onnx_file.stem),
        "version": f"{recipe.get('name', onnx_file.stem)}-step{ckpt.get('step', 0)}",
        "file": onnx_file.name,
        "sha256": sha256_file(onnx_file),
        "bytes": onnx_file.stat().st_size,
        "opset": OPSET,
        "exported_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "model_config": ckpt.get("config", {}),
        "policy_semantics": {
            "policy[0]": "latency_aware weight lambda in [0, 1]: objective + lambda * latency stretch "
                         "(tecore.objectives); learned (sampled in training)",
            "policy[1]": "headroom burst fraction h in [0, 0.5]: effective utilisation = (load + h * largest "
                         "single-pair load) / capacity (tecore.objectives); learned (sampled in training)",
            "policy[2:4]": "reserved; keep 0 (not seen in training).",
            "zero": "all zeros = plain min-MLU",
        },
        "training": {
            "objective": "unsupervised: per instance the policy objective (annealed log-sum-exp of effective "
                         "link utilisation + lambda * latency stretch) of every refinement round, divided by "
                         "that of an equal split over usable candidate paths; policies sampled per instance "
                         "(train.policy_prob); no LP labels",
            "checkpoint_step": ckpt.get("step"),
            "train_topologies": recipe.get("data", {}).get("train", []),
            "validation_topologies": recipe.get("data", {}).get("validation", []),
            "held_out_topologies": recipe.get("data", {}).get("held_out", []),
            "excluded_topologies": recipe.get("data", {}).get("excluded", []),
            "tm_families": recipe.get("data", {}).get("families", []),
            "paths": recipe.get("paths", {}),
        },
        "recipe": recipe,
        "metrics": {"validation_model_over_lp": ckpt.get("val", {})},
    }
    for key in ("metrics",):
        for k, v in old.get(key, {}).items():
            if k != "validation_model_over_lp" and old.get("sha256") == card["sha256"]:
                card[key].setdefault(k, v)  # keep benchmark metrics measured on this very file
    for key, val in (extra or {}).items():
        card[key] = val
    card_file.write_text(json.dumps(card, indent=2, default=float) + "\n")
    return card_file


def max_abs_diff_vs_torch(model: TEHead, onnx_file: Path, inputs: dict[str, np.ndarray]) -> float:
    """Largest |ORT CPU - PyTorch| over the three outputs (MLU and split; loads relative to capacity)."""
    from .session import load_model

    out = load_model(onnx_file, provider="cpu").route(inputs)
    with torch.no_grad():
        split, loads, mlu = model(*(torch.as_tensor(inputs[k]) for k in INPUT_NAMES))
    cap = inputs["capacity_bps"]
    return max(float(np.max(np.abs(out.split - split.numpy()), initial=0.0)),
               float(np.max(np.abs(out.link_load_bps - loads.numpy()) / cap, initial=0.0)),
               abs(out.mlu - float(mlu[0])))
