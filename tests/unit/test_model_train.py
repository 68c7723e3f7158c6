"""`tellm train` / `tellm export` on CPU with the tiny recipe (seconds), and the recipe's split rules."""

from __future__ import annotations

import json

import pytest
import yaml

from .. import ROOT

RECIPES = ROOT / "inference" / "recipes"

pytest.importorskip("torch")


def test_recipe_refuses_held_out_topologies_in_training(tmp_path):
    from tellm.inference.recipe import RecipeError, load_recipe

    doc = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    doc["data"]["train"].append("zoo:Kdl")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(RecipeError, match="held-out"):
        load_recipe(bad)


def test_shipped_recipe_keeps_held_out_unseen():
    from tellm.inference.recipe import load_recipe

    r = load_recipe(RECIPES / "tellm-te.yaml")
    held = {n.lower() for n in r["data"]["held_out"]}
    assert {"sndlib:geant", "zoo:geant2012", "zoo:gtsce", "zoo:cogentco", "zoo:uscarrier", "zoo:kdl"} <= held
    assert r["data"]["max_nodes"] <= 50


def test_tiny_training_then_export_on_cpu(data_dir, tmp_path, capsys):
    from tellm.cli import main

    out = tmp_path / "run"
    assert main(["train", "--recipe", str(RECIPES / "tiny.yaml"), "--out", str(out), "--device", "cpu"]) == 0
    for name in ("dataset.npz", "best.pt", "last.pt", "summary.json", "train_log.jsonl"):
        assert (out / name).exists(), name
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(0 < r["loss"] < 10 for r in log)
    summary = json.loads((out / "summary.json").read_text())
    assert 1.0 <= summary["best_val"]["geomean"] < 3.0  # model / LP on the validation topology
    # Per-policy validation: the model's objective over each policy's LP optimum (a lower bound).
    assert set(summary["best_val"]["policies"]) == {"lambda=0.5,h=0", "lambda=0,h=0.3"}
    assert all(1.0 - 1e-5 <= v < 3.0 for v in summary["best_val"]["policies"].values())
    # Same seed, same data: the same losses (fixed seed end to end).
    again = tmp_path / "again"
    assert main(["train", "--recipe", str(RECIPES / "tiny.yaml"), "--out", str(again), "--device", "cpu",
                 "--dataset", str(out / "dataset.npz")]) == 0
    log2 = [json.loads(line) for line in (again / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log2] == pytest.approx([r["loss"] for r in log], rel=1e-5)

    # Fine-tuning starts from the checkpoint's weights (one warm-up step moves them by ~1e-5), and a
    # checkpoint of another architecture is refused with a clear error.
    import torch

    ckpt = torch.load(out / "best.pt", weights_only=False)
    ckpt["model"] = {k: v + 0.5 for k, v in ckpt["model"].items()}  # weights no training run would reach
    torch.save(ckpt, tmp_path / "shifted.pt")
    tuned = tmp_path / "tuned"
    assert main(["train", "--recipe", str(RECIPES / "tiny.yaml"), "--out", str(tuned), "--device", "cpu",
                 "--dataset", str(out / "dataset.npz"), "--steps", "1", "--init", str(tmp_path / "shifted.pt")]) == 0
    after = torch.load(tuned / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(after[k], ckpt["model"][k], atol=1e-3) for k in after)
    assert json.loads((tuned / "summary.json").read_text())["init"] == str(tmp_path / "shifted.pt")
    wide = tmp_path / "wide.yaml"
    doc = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    doc["model"]["hidden"] = 2 * int(doc["model"].get("hidden", 64))
    wide.write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    assert main(["train", "--recipe", str(wide), "--out", str(tmp_path / "w"), "--device", "cpu",
                 "--dataset", str(out / "dataset.npz"), "--steps", "1", "--init", str(out / "best.pt")]) == 2
    assert "differs from the recipe" in capsys.readouterr().err
    # Fewer refinement rounds share the same weights: fine-tuning a head to run them is allowed.
    fewer = tmp_path / "fewer.yaml"
    doc = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    doc["model"]["rounds"] = max(1, int(doc["model"].get("rounds", 8)) // 2)
    doc["train"]["train_rounds"] = [doc["model"]["rounds"]]
    fewer.write_text(yaml.safe_dump(doc))
    assert main(["train", "--recipe", str(fewer), "--out", str(tmp_path / "f"), "--device", "cpu",
                 "--dataset", str(out / "dataset.npz"), "--steps", "1", "--init", str(out / "best.pt")]) == 0
    assert torch.load(tmp_path / "f" / "last.pt", weights_only=False)["config"]["rounds"] == doc["model"]["rounds"]

    onnx_file = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(out / "best.pt"), "--out", str(onnx_file),
                 "--check-topology", "Abilene"]) == 0
    card = json.loads(onnx_file.with_suffix(".json").read_text())
    from tellm.inference.session import sha256_file

    assert card["sha256"] == sha256_file(onnx_file) and card["opset"] == 18
    assert card["export_check"]["max_abs_diff_ort_cpu_vs_torch"] <= 1e-4


@pytest.mark.parametrize("lam,h", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.3), (0.3, 0.2)])
def test_training_objective_is_tecores_policy_objective(data_dir, lam, h):
    """The torch loss (batched, exact largest-pair load via (pair, link) groups) equals
    tecore.objectives.evaluate_objective on a random split, so the model is trained on what the LP solves."""
    import numpy as np
    import torch

    from tecore import compute_paths, generate, load_topology
    from tecore.objectives import evaluate_objective
    from tellm.inference import dataset as ds
    from tellm.contract.onnx_io import incidence_arrays
    from tellm.inference.train import _Dev, make_batch, policy_objective

    topo = load_topology("geant")
    topo = type(topo)(**{**topo.__dict__, "latency_seconds": topo.latency_seconds + 1e-6})  # the model's 1 us floor
    paths = compute_paths(topo)
    pp, ip, il = incidence_arrays(paths)
    nan = np.full(1, np.nan)
    td = ds.TopologyData("geant", topo.capacity_bps.astype(np.float32), topo.latency_seconds.astype(np.float32),
                         np.full(topo.num_links, -1), pp, ip, il, np.zeros((1, paths.num_pairs), np.float32), nan,
                         np.full((1, 2), np.nan), nan)
    dev = _Dev(td, "cpu")
    d = generate(topo, "hotspot", 1, seed=3)[0].pair_demands(paths.pairs)
    x = np.random.default_rng(0).random(paths.num_paths)
    x /= np.bincount(paths.path_pair, weights=x)[paths.path_pair]
    # Two instances in one batch (the second with another policy) must not leak into each other.
    pol = torch.tensor([[lam, h, 0, 0], [1.0 - lam, 0.5 - h, 0, 0]], dtype=torch.float32)
    batch = make_batch([(dev, torch.tensor(d, dtype=torch.float32), dev.cap, torch.ones(dev.L))] * 2, "cpu", pol)
    got = policy_objective(torch.tensor(np.tile(x, 2), dtype=torch.float32), batch)
    for g, (l_, h_) in enumerate(pol[:, :2].tolist()):
        want = evaluate_objective(topo, paths, d, x, l_, h_).objective
        assert float(got[g]) == pytest.approx(want, rel=1e-4)  # float32 sums
