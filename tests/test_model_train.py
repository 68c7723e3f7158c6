"""`tellm train` / `tellm export` on CPU with the tiny recipe (seconds), and the recipe's split rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

RECIPES = Path(__file__).resolve().parents[1] / "inference" / "recipes"

pytest.importorskip("torch")


def test_recipe_refuses_held_out_topologies_in_training(tmp_path):
    from tellm.inference.dataset import RecipeError, load_recipe

    doc = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    doc["data"]["train"].append("zoo:Kdl")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(RecipeError, match="held-out"):
        load_recipe(bad)


def test_shipped_recipe_keeps_held_out_unseen():
    from tellm.inference.dataset import load_recipe

    r = load_recipe(RECIPES / "tellm-te.yaml")
    held = {n.lower() for n in r["data"]["held_out"]}
    assert {"sndlib:geant", "zoo:geant2012", "zoo:gtsce", "zoo:cogentco", "zoo:uscarrier", "zoo:kdl"} <= held
    assert r["data"]["max_nodes"] <= 50


def test_tiny_training_then_export_on_cpu(data_dir, tmp_path):
    from tellm.cli import main

    out = tmp_path / "run"
    assert main(["train", "--recipe", str(RECIPES / "tiny.yaml"), "--out", str(out), "--device", "cpu"]) == 0
    for name in ("dataset.npz", "best.pt", "last.pt", "summary.json", "train_log.jsonl"):
        assert (out / name).exists(), name
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(0 < r["loss"] < 10 for r in log)
    summary = json.loads((out / "summary.json").read_text())
    assert 1.0 <= summary["best_val"]["geomean"] < 3.0  # model / LP on the validation topology
    # Same seed, same data: the same losses (fixed seed end to end).
    again = tmp_path / "again"
    assert main(["train", "--recipe", str(RECIPES / "tiny.yaml"), "--out", str(again), "--device", "cpu",
                 "--dataset", str(out / "dataset.npz")]) == 0
    log2 = [json.loads(line) for line in (again / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log2] == pytest.approx([r["loss"] for r in log], rel=1e-5)

    onnx_file = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(out / "best.pt"), "--out", str(onnx_file),
                 "--check-topology", "Abilene"]) == 0
    card = json.loads(onnx_file.with_suffix(".json").read_text())
    from tellm.inference.runner import sha256_file

    assert card["sha256"] == sha256_file(onnx_file) and card["opset"] == 18
    assert card["export_check"]["max_abs_diff_ort_cpu_vs_torch"] <= 1e-4
