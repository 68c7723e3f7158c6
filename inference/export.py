"""Export a trained TE head checkpoint to ONNX (PyTorch; export only) and write its JSON card."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch

from tellm.contract.vocabulary import INPUT_NAMES, OUTPUT_NAMES, POLICY_DIM

from .model import ModelConfig, TEHead, export_wrapper
from .runner import sha256_file

OPSET = 18  # ScatterElements with reduction="max" (segment max) needs opset >= 18


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[TEHead, dict]:
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    model = TEHead(ModelConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


def example_inputs() -> tuple[torch.Tensor, ...]:
    """A 3-node ring (2 pairs, 4 paths) to trace the graph; all axes are exported as dynamic."""
    # links: 0: a->b, 1: b->c, 2: a->c ; pair 0 (a->c): [a->c], [a->b, b->c] ; pair 1 (a->b): [a->b], ...
    return (torch.tensor([1.0e9, 2.0e9]), torch.tensor([10e9, 10e9, 10e9]), torch.tensor([1e-3, 1e-3, 2e-3]),
            torch.ones(3), torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 2, 3, 3]),
            torch.tensor([2, 0, 1, 0, 2, 1]), torch.zeros(POLICY_DIM))


def export_onnx(model: TEHead, out_file: str | Path, opset: int = OPSET) -> Path:
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    wrapper = export_wrapper(model).eval()
    dyn = {"demand_bps": {0: "P"}, "capacity_bps": {0: "L"}, "latency_seconds": {0: "L"}, "link_up": {0: "L"},
           "path_pair": {0: "Np"}, "inc_path": {0: "nnz"}, "inc_link": {0: "nnz"}, "split": {0: "Np"},
           "link_load_bps": {0: "L"}}
    with torch.no_grad():
        torch.onnx.export(wrapper, example_inputs(), str(out_file), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_axes=dyn, opset_version=opset, dynamo=False)
    import onnx

    onnx.checker.check_model(onnx.load(str(out_file)))
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
    from .runner import TEHeadRunner

    out = TEHeadRunner(onnx_file).route(inputs)
    with torch.no_grad():
        split, loads, mlu = model(*(torch.as_tensor(inputs[k]) for k in INPUT_NAMES))
    cap = inputs["capacity_bps"]
    return max(float(np.max(np.abs(out.split - split.numpy()), initial=0.0)),
               float(np.max(np.abs(out.link_load_bps - loads.numpy()) / cap, initial=0.0)),
               abs(out.mlu - float(mlu[0])))
