"""Unsupervised training of the TE head on a differentiable MLU objective (PyTorch).

Loss: per instance, a smooth maximum (log-sum-exp, temperature relative to the current MLU and
annealed towards the hard max) of the link utilisations produced by each refinement round, divided
by the MLU of an equal split over the usable candidate paths (a cheap, label-free scale). No LP
optimum is used for training; validation reports model MLU / LP optimum on validation topologies.

Each step draws a batch of instances (topology, TM) from the training topologies and augments them:
log-normal noise on demands, random sparsity, random heterogeneous capacities (both directions of a
link alike) and random link failures (both directions down).

Runs as ``tellm train`` or, where the package is not installed (the GPU machine), as
``python -m tellm.inference.train``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import dataset as ds
from .model import ModelConfig, TEHead, seg_max, seg_sum


class _Dev:
    """One topology's tensors on the training device."""

    def __init__(self, td: ds.TopologyData, device):
        t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
        self.name = td.name
        self.cap = t(td.capacity_bps, torch.float32)
        self.lat = t(td.latency_seconds, torch.float32)
        rev = td.reverse_link
        self.und = t(np.where(rev >= 0, np.minimum(np.arange(rev.size), rev), np.arange(rev.size)), torch.int64)
        self.path_pair = t(td.path_pair, torch.int64)
        self.inc_path = t(td.inc_path, torch.int64)
        self.inc_link = t(td.inc_link, torch.int64)
        self.tms = t(td.tms, torch.float32)
        self.lp = td.lp_mlu
        self.L, self.P, self.Np = td.capacity_bps.size, td.num_pairs, td.path_pair.size


def _augment(topo: _Dev, tm_index: int, cfg: dict, gen: torch.Generator, device):
    d = topo.tms[tm_index].clone()
    sigma = float(cfg.get("demand_noise_sigma", 0.5)) * float(torch.rand((), generator=gen))
    d = d * torch.exp(sigma * torch.randn(d.shape, generator=gen).to(device))
    if float(torch.rand((), generator=gen)) < float(cfg.get("sparsity_prob", 0.2)):
        keep = torch.rand(d.shape, generator=gen).to(device) < 0.2 + 0.6 * float(torch.rand((), generator=gen))
        keep[torch.argmax(d)] = True  # never an empty TM
        d = d * keep
    cap = topo.cap.clone()
    if float(torch.rand((), generator=gen)) < float(cfg.get("capacity_aug_prob", 0.5)):
        choices = torch.tensor(cfg.get("capacity_choices", [1.0, 2.5, 4.0, 10.0]), device=device)
        pick = torch.randint(0, choices.numel(), (topo.L,), generator=gen).to(device)
        cap = cap * choices[pick][topo.und]
    up = torch.ones(topo.L, device=device)
    if float(torch.rand((), generator=gen)) < float(cfg.get("fail_prob", 0.3)):
        n_fail = int(torch.randint(1, int(cfg.get("max_failed_links", 2)) + 1, (), generator=gen))
        for _ in range(n_fail):
            l = int(torch.randint(0, topo.L, (), generator=gen))
            up[topo.und == topo.und[l]] = 0.0
    return d, cap, up


def make_batch(items, device):
    """Disjoint union of instances [(topo, demand, cap, up)] -> model inputs and graph ids."""
    dem, cap, lat, up, pp, ip, il, lg, pg = [], [], [], [], [], [], [], [], []
    off_p = off_np = off_l = 0
    for g, (topo, d, c, u) in enumerate(items):
        dem.append(d); cap.append(c); lat.append(topo.lat); up.append(u)
        pp.append(topo.path_pair + off_p); ip.append(topo.inc_path + off_np); il.append(topo.inc_link + off_l)
        lg.append(torch.full((topo.L,), g, dtype=torch.int64, device=device))
        pg.append(torch.full((topo.P,), g, dtype=torch.int64, device=device))
        off_p += topo.P; off_np += topo.Np; off_l += topo.L
    cat = torch.cat
    return dict(demand_bps=cat(dem), capacity_bps=cat(cap), latency_seconds=cat(lat), link_up=cat(up),
                path_pair=cat(pp), inc_path=cat(ip), inc_link=cat(il),
                policy=torch.zeros(4, device=device), link_graph=cat(lg), pair_graph=cat(pg),
                graphs_like=torch.zeros(len(items), device=device))


def graph_mlu(util, batch):
    return seg_max(util, batch["link_graph"], batch["graphs_like"], floor=0.0)


def smooth_mlu(util, batch, tau_rel: float):
    """Per-graph log-sum-exp of utilisation with temperature tau_rel * (current MLU)."""
    lg, G = batch["link_graph"], batch["graphs_like"]
    m = graph_mlu(util.detach(), batch).clamp_min(1e-12)
    tau = tau_rel * m
    e = torch.exp((util - m[lg]) / tau[lg]) * (batch["link_up"] > 0.5)
    return m + tau * torch.log(seg_sum(e, lg, G).clamp_min(1e-30))


@torch.no_grad()
def equal_split_mlu(batch):
    """MLU of an equal split over each pair's usable candidates (the loss's label-free scale)."""
    up = (batch["link_up"] > 0.5).float()
    ip, il, pp = batch["inc_path"], batch["inc_link"], batch["path_pair"]
    npaths = torch.zeros_like(pp, dtype=torch.float32)
    down = seg_max(1.0 - up[il], ip, npaths)
    usable = 1.0 - down
    cnt = seg_sum(usable, pp, batch["demand_bps"])
    w = torch.where(cnt[pp] > 0, usable / cnt[pp].clamp_min(1.0), 1.0 / seg_sum(torch.ones_like(usable), pp,
                                                                                 batch["demand_bps"])[pp])
    flow = w * batch["demand_bps"][pp]
    loads = seg_sum(flow[ip], il, batch["capacity_bps"])
    return graph_mlu(loads / batch["capacity_bps"] * up, batch)


@torch.no_grad()
def validate(model, topos: list[_Dev], device, rounds=None, max_tms: int = 10) -> dict:
    """Model MLU / LP optimum on the validation topologies' TMs (no augmentation)."""
    model.eval()
    ratios, per_topo = [], {}
    for topo in topos:
        r = []
        for i in range(min(max_tms, topo.tms.shape[0])):
            if not np.isfinite(topo.lp[i]) or topo.lp[i] <= 0:
                continue
            d = topo.tms[i] * topo.cap.max()
            _, _, mlu = model(d, topo.cap, topo.lat, torch.ones(topo.L, device=device), topo.path_pair,
                              topo.inc_path, topo.inc_link, torch.zeros(4, device=device), rounds=rounds)
            r.append(float(mlu) / float(topo.lp[i]))
        if r:
            per_topo[topo.name] = float(np.exp(np.mean(np.log(r))))
            ratios += r
    model.train()
    return {"geomean": float(np.exp(np.mean(np.log(ratios)))) if ratios else float("nan"),
            "p90": float(np.percentile(ratios, 90)) if ratios else float("nan"), "per_topology": per_topo}


def train(recipe: dict, dataset_file: Path, out_dir: Path, device: str = "cpu", progress: bool = True,
          steps: int | None = None, time_limit_seconds: float | None = None, log=print) -> dict:
    cfg = recipe["train"]
    seed = int(recipe.get("seed", 0))
    torch.manual_seed(seed)
    np.random.seed(seed)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    train_td, val_td = ds.load(dataset_file)
    train_topos = [_Dev(t, dev) for t in train_td]
    val_topos = [_Dev(t, dev) for t in val_td]
    mcfg = ModelConfig(**recipe["model"])
    model = TEHead(mcfg).to(dev)
    steps = int(steps or cfg.get("steps", 1000))
    time_limit = float(time_limit_seconds or cfg.get("time_limit_seconds", 1e9))
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.get("lr", 1e-3)),
                            weight_decay=float(cfg.get("weight_decay", 1e-4)))
    warm = int(cfg.get("warmup_steps", 100))
    lr_min_frac = float(cfg.get("lr_min_fraction", 0.02))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        lr_min_frac + (1 - lr_min_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    batch_n = int(cfg.get("batch_instances", 16))
    tau0, tau1 = float(cfg.get("tau_start", 0.1)), float(cfg.get("tau_end", 0.005))
    round_decay = float(cfg.get("round_loss_decay", 0.6))
    rounds_choices = cfg.get("train_rounds", [mcfg.rounds])
    val_every = int(cfg.get("val_every", 200))
    # Topologies drawn in proportion to sqrt(#pairs): big ones matter more, small ones still appear.
    weights = np.sqrt([t.P for t in train_topos])
    weights = weights / weights.sum()
    out_dir.mkdir(parents=True, exist_ok=True)
    logf = (out_dir / "train_log.jsonl").open("w")
    best = {"geomean": float("inf")}
    t_start = time.time()
    bar = None
    if progress:
        try:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            bar.start()
            task = bar.add_task("train", total=steps, info="")
        except ImportError:
            bar = None
    rng = np.random.default_rng(seed)
    ema = None
    step = 0
    for step in range(1, steps + 1):
        frac = step / steps
        tau = tau0 * (tau1 / tau0) ** frac
        items = []
        for ti in rng.choice(len(train_topos), size=batch_n, p=weights):
            topo = train_topos[ti]
            items.append((topo, *_augment(topo, int(rng.integers(topo.tms.shape[0])), cfg, gen, dev)))
        batch = make_batch(items, dev)
        ref = equal_split_mlu(batch).clamp_min(1e-12)
        R = int(rng.choice(rounds_choices))
        outs = model(**batch, rounds=R, return_all=True)
        loss = 0.0
        wsum = 0.0
        for t, (_, _, util) in enumerate(outs):
            w = round_decay ** (len(outs) - 1 - t)
            loss = loss + w * (smooth_mlu(util, batch, tau) / ref).mean()
            wsum += w
        loss = loss / wsum
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.get("grad_clip", 1.0)))
        opt.step()
        sched.step()
        final_ratio = float((graph_mlu(outs[-1][2].detach(), batch) / ref).mean())
        ema = final_ratio if ema is None else 0.98 * ema + 0.02 * final_ratio
        loss_value = float(loss.detach())
        rec = {"step": step, "loss": loss_value, "mlu_over_equal": final_ratio, "tau": tau,
               "lr": sched.get_last_lr()[0], "grad_norm": float(gnorm), "seconds": time.time() - t_start}
        done = time.time() - t_start > time_limit or step == steps
        if step % val_every == 0 or done:
            v = validate(model, val_topos, dev)
            rec["val_geomean"], rec["val_p90"] = v["geomean"], v["p90"]
            rec["val_per_topology"] = v["per_topology"]
            ckpt = {"model": model.state_dict(), "config": mcfg.to_dict(), "recipe": recipe, "step": step,
                    "val": v}
            torch.save(ckpt, out_dir / "last.pt")
            if v["geomean"] < best["geomean"]:
                best = dict(v, step=step)
                torch.save(ckpt, out_dir / "best.pt")
            log(f"step {step}: loss {loss_value:.4f} mlu/equal(ema) {ema:.4f} val model/LP geomean "
                f"{v['geomean']:.4f} p90 {v['p90']:.4f} ({time.time() - t_start:.0f}s)")
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        if bar is not None:
            bar.update(task, advance=1, info=f"loss {loss_value:.4f} ema {ema:.4f}")
        if done:
            break
    if bar is not None:
        bar.stop()
    logf.close()
    rounds_sweep = {}
    if (out_dir / "best.pt").exists():
        model.load_state_dict(torch.load(out_dir / "best.pt", map_location=dev, weights_only=False)["model"])
        for R in cfg.get("sweep_rounds", [mcfg.rounds]):
            rounds_sweep[str(R)] = validate(model, val_topos, dev, rounds=int(R))["geomean"]
        log(f"validation model/LP geomean by rounds: {rounds_sweep}")
    summary = {"rounds_sweep": rounds_sweep, "steps": step, "seconds": time.time() - t_start, "best_val": best, "device": str(dev),
               "train_topologies": [t.name for t in train_topos], "validation_topologies": [t.name for t in val_topos]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="train the TE head from a prepared dataset (GPU-side entry point)")
    p.add_argument("--recipe", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=YAML",
                   help="override a recipe value, e.g. --set model.hidden=128 (recorded in the checkpoint)")
    a = p.parse_args(argv)
    recipe = apply_overrides(ds.load_recipe(a.recipe), a.set)
    train(recipe, a.dataset, a.out, a.device, progress=not a.no_progress, steps=a.steps,
          time_limit_seconds=a.time_limit)
    return 0


def apply_overrides(recipe: dict, items: list[str]) -> dict:
    import yaml

    for item in items:
        key, _, val = item.partition("=")
        section, _, name = key.partition(".")
        if not name or section not in recipe or not isinstance(recipe[section], dict):
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE with an existing section")
        recipe[section][name] = yaml.safe_load(val)
    return recipe


if __name__ == "__main__":
    raise SystemExit(main())
