"""``tellm train`` and ``tellm export``: the TE head's training and ONNX export (PyTorch, imported lazily)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tellm.errors import CLIError
from tellm.inference.artifacts import DEFAULT_MODEL_PATH, DEFAULT_RECIPE_PATH


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the TE head (unsupervised, differentiable MLU) from a recipe",
        description="Build the training set (candidate paths and generated TMs of the recipe's train and "
                    "validation topologies, <= 50 nodes; held-out topologies are never loaded) and train the "
                    "TE head on a smoothed-MLU objective. Writes best.pt / last.pt checkpoints, "
                    "train_log.jsonl and summary.json to --out. Needs PyTorch (pip install tellm[train]).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE_PATH, help="training recipe (YAML)")
    p.add_argument("--out", type=Path, default=Path("runs/tellm-te"), help="run directory")
    p.add_argument("--dataset", type=Path, default=None,
                   help="prepared dataset (.npz); built into the run directory when absent")
    p.add_argument("--prepare-only", action="store_true", help="build the dataset file and stop")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop (with a checkpoint) after this long")
    p.add_argument("--init", type=Path, default=None, metavar="CHECKPOINT",
                   help="fine-tune: start from this checkpoint's weights (same model config as the recipe)")
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "export", help="export a TE head checkpoint to ONNX with its JSON card",
        description="Export a checkpoint to ONNX (opset 18, dynamic pairs/paths/links/incidence axes), check "
                    "ONNX Runtime CPU against PyTorch on a topology, and write the card (<model>.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--checkpoint", type=Path, required=True, help="best.pt / last.pt from tellm train")
    e.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH, help="ONNX file to write")
    e.add_argument("--rounds", type=int, default=None,
                   help="refinement rounds baked into the ONNX graph (default: the checkpoint's)")
    e.add_argument("--check-topology", default="Abilene",
                   help="topology for the ORT-vs-PyTorch check (must differ by <= 1e-4)")
    e.set_defaults(func=run_export)


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CLIError("PyTorch is not installed: pip install 'tellm[train]'") from None


def run_train(args) -> int:
    _torch()
    import torch

    from tellm.inference import dataset as ds
    from tellm.inference.recipe import RecipeError, load_recipe
    from tellm.inference.train import model_config, train

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as exc:
        raise CLIError(str(exc)) from None
    dataset = args.dataset or args.out / "dataset.npz"
    try:
        model_config(recipe)
        if not dataset.exists():
            ds.prepare(recipe, dataset, progress=True)
            print(f"dataset written to {dataset}")
    except RecipeError as exc:
        raise CLIError(f"{args.recipe}: {exc}") from None
    if args.prepare_only:
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.init is not None and not args.init.is_file():
        raise CLIError(f"--init {args.init}: no such checkpoint file")
    try:
        summary = train(recipe, dataset, args.out, device=device, steps=args.steps,
                        time_limit_seconds=args.time_limit, init=args.init)
    except RecipeError as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps({k: summary[k] for k in ("steps", "seconds", "best_val", "device")}, indent=2))
    return 0


def run_export(args) -> int:
    _torch()
    from tecore import compute_paths, generate, load_topology

    from tellm.inference.export import export_onnx, load_checkpoint, max_abs_diff_vs_torch, write_card
    import numpy as np

    from tellm.contract.onnx_io import onnx_inputs

    if not args.checkpoint.exists():
        raise CLIError(f"{args.checkpoint}: no such checkpoint")
    model, ckpt = load_checkpoint(args.checkpoint)
    if args.rounds is not None:
        if not 1 <= args.rounds <= 256:
            raise CLIError("--rounds must be between 1 and 256")
        model.cfg.rounds = args.rounds
        ckpt["config"] = model.cfg.to_dict()
    out = export_onnx(model, args.out)
    topo = load_topology(args.check_topology)
    paths = compute_paths(topo)
    tm = generate(topo, "gravity", 1, seed=0)[0]
    # One check per policy knob: the policy inputs take other branches of the graph.
    checks = {label: max_abs_diff_vs_torch(model, out, onnx_inputs(topo, paths, tm, policy=np.array(vec, np.float32)))
              for label, vec in (("min_mlu", [0, 0, 0, 0]), ("latency_aware(0.5)", [0.5, 0, 0, 0]),
                                 ("headroom(0.3)", [0, 0.3, 0, 0]))}
    diff = max(checks.values())
    if diff > 1e-4:
        raise CLIError(f"ONNX Runtime differs from PyTorch by {diff:.3g} (> 1e-4) on {topo.name}: {checks}")
    card = write_card(out, ckpt, {"export_check": {"topology": topo.name, "max_abs_diff_ort_cpu_vs_torch": diff,
                                                   "per_policy": checks}})
    print(f"wrote {out} ({out.stat().st_size} bytes) and {card}; ORT CPU vs PyTorch max |diff| {diff:.2e}")
    return 0
