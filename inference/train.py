"""Unsupervised training of the TE head on the differentiable policy objective (PyTorch).

Loss: per instance, the objective of tecore.objectives under the instance's policy vector -- a smooth
maximum (log-sum-exp, temperature relative to the current value and annealed towards the hard max)
of the *effective* link utilisations (load + h * largest pair load, over capacity) produced by each
refinement round, plus lambda times the latency stretch -- divided by the same objective of an equal
split over the usable candidate paths (a cheap, label-free scale). Policies are sampled per instance
(``train.policy_prob`` of them non-zero: latency_aware or headroom with a uniform parameter), and
each instance's TM is scaled to a random equal-split MLU (latency_aware is not scale-invariant).
No LP optimum is used for training; validation reports model / LP optimum on validation topologies,
for min-MLU and for the dataset's validation policies.

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

from tellm.contract.vocabulary import HEADROOM_SLOT, LATENCY_SLOT, POLICY_DIM

from . import dataset as ds
from .model import ModelConfig, TEHead, seg_max, seg_sum
from .recipe import RecipeError, TrainConfig, apply_overrides, load_recipe, parse_recipe, typed_section


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
        self.pol_lp, self.pol_scale = td.pol_lp, td.pol_scale
        self.L, self.P, self.Np = td.capacity_bps.size, td.num_pairs, td.path_pair.size
        # (pair, link) groups of the incidence entries: the exact largest-pair load of the headroom term
        # (tecore.lp.pair_link_index in torch: the GPU side has torch and numpy, not tecore/highspy).
        key = self.path_pair[self.inc_path] * self.L + self.inc_link
        uniq, self.group = torch.unique(key, return_inverse=True)
        self.group_link = uniq % self.L
        self.n_groups = int(uniq.numel())


def _augment(topo: _Dev, tm_index: int, cfg: TrainConfig, gen: torch.Generator, device):
    d = topo.tms[tm_index].clone()
    sigma = cfg.demand_noise_sigma * float(torch.rand((), generator=gen))
    d = d * torch.exp(sigma * torch.randn(d.shape, generator=gen).to(device))
    if float(torch.rand((), generator=gen)) < cfg.sparsity_prob:
        keep = torch.rand(d.shape, generator=gen).to(device) < 0.2 + 0.6 * float(torch.rand((), generator=gen))
        keep[torch.argmax(d)] = True  # never an empty TM
        d = d * keep
    cap = topo.cap.clone()
    if float(torch.rand((), generator=gen)) < cfg.capacity_aug_prob:
        choices = torch.tensor(cfg.capacity_choices, device=device)
        pick = torch.randint(0, choices.numel(), (topo.L,), generator=gen).to(device)
        cap = cap * choices[pick][topo.und]
    up = torch.ones(topo.L, device=device)
    if float(torch.rand((), generator=gen)) < cfg.fail_prob:
        n_fail = int(torch.randint(1, cfg.max_failed_links + 1, (), generator=gen))
        for _ in range(n_fail):
            l = int(torch.randint(0, topo.L, (), generator=gen))
            up[topo.und == topo.und[l]] = 0.0
    return d, cap, up


MODEL_INPUTS = ("demand_bps", "capacity_bps", "latency_seconds", "link_up", "path_pair", "inc_path", "inc_link",
                "policy", "link_graph", "pair_graph", "graphs_like")


def make_batch(items, device, policies: torch.Tensor | None = None):
    """Disjoint union of instances [(topo, demand, cap, up)] -> model inputs, graph ids and the
    (pair, link) groups of the objective. ``policies`` [G, 4] (default: all zero = min-MLU)."""
    dem, cap, lat, up, pp, ip, il, lg, pg, grp, gl = [], [], [], [], [], [], [], [], [], [], []
    off_p = off_np = off_l = off_g = 0
    for g, (topo, d, c, u) in enumerate(items):
        dem.append(d); cap.append(c); lat.append(topo.lat); up.append(u)
        pp.append(topo.path_pair + off_p); ip.append(topo.inc_path + off_np); il.append(topo.inc_link + off_l)
        lg.append(torch.full((topo.L,), g, dtype=torch.int64, device=device))
        pg.append(torch.full((topo.P,), g, dtype=torch.int64, device=device))
        grp.append(topo.group + off_g); gl.append(topo.group_link + off_l)
        off_p += topo.P; off_np += topo.Np; off_l += topo.L; off_g += topo.n_groups
    cat = torch.cat
    if policies is None:
        policies = torch.zeros(len(items), 4, device=device)
    return dict(demand_bps=cat(dem), capacity_bps=cat(cap), latency_seconds=cat(lat), link_up=cat(up),
                path_pair=cat(pp), inc_path=cat(ip), inc_link=cat(il),
                policy=policies, link_graph=cat(lg), pair_graph=cat(pg),
                graphs_like=torch.zeros(len(items), device=device), group=cat(grp), group_link=cat(gl),
                groups_like=torch.zeros(off_g, device=device))


def model_inputs(batch) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS}


def graph_max(x, batch):
    return seg_max(x, batch["link_graph"], batch["graphs_like"], floor=0.0)


def effective_util(split, batch):
    """Per link: (load + h * largest single-pair load) / capacity, zero on down links (tecore.objectives)."""
    ip, il, pp = batch["inc_path"], batch["inc_link"], batch["path_pair"]
    flow = (split * batch["demand_bps"][pp])[ip]
    loads = seg_sum(flow, il, batch["capacity_bps"])
    pair_link = seg_sum(flow, batch["group"], batch["groups_like"])
    surge = seg_max(pair_link, batch["group_link"], batch["capacity_bps"], floor=0.0)
    h = batch["policy"][:, HEADROOM_SLOT][batch["link_graph"]]
    return (loads + h * surge) / batch["capacity_bps"] * (batch["link_up"] > 0.5)


def latency_stretch(split, batch):
    """Per graph: demand-weighted mean path latency / demand-weighted mean lowest candidate latency."""
    ip, il, pp, d = batch["inc_path"], batch["inc_link"], batch["path_pair"], batch["demand_bps"]
    path_lat = seg_sum(batch["latency_seconds"].clamp_min(0.0)[il] + 1.0e-6, ip, split)  # the model's 1 us floor
    pair_min = -seg_max(-path_lat, pp, d)
    G, pg = batch["graphs_like"], batch["pair_graph"]
    num = seg_sum(split * d[pp] * path_lat, pg[pp], G)
    return num / seg_sum(d * pair_min, pg, G).clamp_min(1e-30)


def policy_objective(split, batch, tau_rel: float | None = None):
    """Per graph: max effective utilisation (smooth when tau_rel is given) + lambda * latency stretch."""
    util = effective_util(split, batch)
    lg, G = batch["link_graph"], batch["graphs_like"]
    m = graph_max(util.detach(), batch).clamp_min(1e-12)
    if tau_rel is None:
        u = graph_max(util, batch)
    else:
        tau = tau_rel * m
        e = torch.exp((util - m[lg]) / tau[lg]) * (batch["link_up"] > 0.5)
        u = m + tau * torch.log(seg_sum(e, lg, G).clamp_min(1e-30))
    lam = batch["policy"][:, LATENCY_SLOT]
    return u + torch.where(lam > 0, lam * latency_stretch(split, batch), torch.zeros_like(lam))


@torch.no_grad()
def equal_split(batch):
    """An equal split over each pair's usable candidates (the loss's label-free scale)."""
    up = (batch["link_up"] > 0.5).float()
    ip, il, pp = batch["inc_path"], batch["inc_link"], batch["path_pair"]
    npaths = torch.zeros_like(pp, dtype=torch.float32)
    down = seg_max(1.0 - up[il], ip, npaths)
    usable = 1.0 - down
    cnt = seg_sum(usable, pp, batch["demand_bps"])
    return torch.where(cnt[pp] > 0, usable / cnt[pp].clamp_min(1.0),
                       1.0 / seg_sum(torch.ones_like(usable), pp, batch["demand_bps"])[pp])


def sample_policies(n: int, cfg: TrainConfig, rng: np.random.Generator, device) -> torch.Tensor:
    """[n, POLICY_DIM] policy vectors: zero (min-MLU) with probability 1 - policy_prob, else latency_aware
    (lambda ~ U(0, 1)) or headroom (h ~ U(0, 0.5)) with equal odds."""
    pol = np.zeros((n, POLICY_DIM), dtype=np.float32)
    on = rng.random(n) < cfg.policy_prob
    lat = rng.random(n) < 0.5
    pol[on & lat, LATENCY_SLOT] = rng.uniform(0.0, 1.0, int((on & lat).sum()))
    pol[on & ~lat, HEADROOM_SLOT] = rng.uniform(0.0, 0.5, int((on & ~lat).sum()))
    return torch.as_tensor(pol, device=device)


@torch.no_grad()
def rescale_demands(batch, targets: torch.Tensor) -> None:
    """Scale each instance's TM so that its equal-split MLU is ``targets`` [G]."""
    zero = dict(batch, policy=torch.zeros_like(batch["policy"]))
    eq = graph_max(effective_util(equal_split(batch), zero), batch).clamp_min(1e-12)
    batch["demand_bps"] = batch["demand_bps"] * (targets / eq)[batch["pair_graph"]]


@torch.no_grad()
def validate(model, topos: list[_Dev], device, rounds=None, max_tms: int = 10) -> dict:
    """Model / LP optimum on the validation topologies' TMs (no augmentation): min-MLU on up to
    ``max_tms`` TMs each, and each dataset validation policy (dataset.VALIDATION_POLICIES) on its TMs.
    ``score`` (model selection) is the geo-mean over all of them."""
    model.eval()
    ratios, per_topo, pol_ratios = [], {}, {j: [] for j in range(len(ds.VALIDATION_POLICIES))}
    for topo in topos:
        r = []
        for i in range(min(max_tms, topo.tms.shape[0])):
            if not np.isfinite(topo.lp[i]) or topo.lp[i] <= 0:
                continue
            d = topo.tms[i] * topo.cap.max()
            _, _, mlu = model(d, topo.cap, topo.lat, torch.ones(topo.L, device=device), topo.path_pair,
                              topo.inc_path, topo.inc_link, torch.zeros(4, device=device), rounds=rounds)
            r.append(float(mlu) / float(topo.lp[i]))
            if not np.isfinite(topo.pol_scale[i]):
                continue
            for j, (lam, h) in enumerate(ds.VALIDATION_POLICIES):
                pol = torch.tensor([[lam, h, 0.0, 0.0]], device=device)
                batch = make_batch([(topo, topo.tms[i] * float(topo.pol_scale[i]), topo.cap,
                                     torch.ones(topo.L, device=device))], device, pol)
                split, _, _ = model(**dict(model_inputs(batch), policy=pol[0], link_graph=None, pair_graph=None,
                                           graphs_like=None), rounds=rounds)
                pol_ratios[j].append(float(policy_objective(split, batch)[0]) / float(topo.pol_lp[i, j]))
        if r:
            per_topo[topo.name] = float(np.exp(np.mean(np.log(r))))
            ratios += r
    model.train()
    gm = lambda x: float(np.exp(np.mean(np.log(x)))) if x else float("nan")  # noqa: E731
    pol = {f"lambda={lam:g},h={h:g}": gm(pol_ratios[j]) for j, (lam, h) in enumerate(ds.VALIDATION_POLICIES)}
    every = ratios + [x for v in pol_ratios.values() for x in v]
    return {"geomean": gm(ratios), "p90": float(np.percentile(ratios, 90)) if ratios else float("nan"),
            "per_topology": per_topo, "policies": pol, "score": gm(every)}


def model_config(recipe: dict) -> ModelConfig:
    """The recipe's model section as the TE head's ModelConfig; RecipeError names a bad key."""
    return typed_section(ModelConfig, recipe["model"], "model")


def train(recipe: dict, dataset_file: Path, out_dir: Path, device: str = "cpu", progress: bool = True,
          steps: int | None = None, time_limit_seconds: float | None = None, log=print,
          init: Path | None = None) -> dict:
    """Train from scratch, or from the weights of checkpoint ``init`` (fine-tuning: a fresh optimiser and
    schedule over the same architecture; a checkpoint of another architecture is an error)."""
    r = parse_recipe(recipe)
    cfg = r.train
    seed = r.seed
    torch.manual_seed(seed)
    np.random.seed(seed)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    train_td, val_td = ds.load(dataset_file)
    train_topos = [_Dev(t, dev) for t in train_td]
    val_topos = [_Dev(t, dev) for t in val_td]
    mcfg = model_config(recipe)
    model = TEHead(mcfg).to(dev)
    if init is not None:
        load_init(model, mcfg, init, dev)
    steps = int(steps or cfg.steps)
    time_limit = float(time_limit_seconds or cfg.time_limit_seconds)
    t_start = time.time()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = cfg.warmup_steps
    lr_min_frac = cfg.lr_min_fraction
    # Learning rate and temperature follow the budget that ends first, steps or wall time, so that a
    # time-limited run still anneals.
    progress_of = lambda s: min(1.0, max(s / steps, (time.time() - t_start) / time_limit))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        lr_min_frac + (1 - lr_min_frac) * 0.5 * (1 + math.cos(math.pi * progress_of(s)))))
    batch_n = cfg.batch_instances
    tau0, tau1 = cfg.tau_start, cfg.tau_end
    round_decay = cfg.round_loss_decay
    rounds_choices = cfg.train_rounds or (mcfg.rounds,)
    val_every = cfg.val_every
    # Topologies drawn in proportion to sqrt(#pairs): big ones matter more, small ones still appear.
    weights = np.sqrt([t.P for t in train_topos])
    weights = weights / weights.sum()
    out_dir.mkdir(parents=True, exist_ok=True)
    logf = (out_dir / "train_log.jsonl").open("w")
    best = {"score": float("inf")}
    scale_lo, scale_hi = cfg.mlu_scale_range
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
        tau = tau0 * (tau1 / tau0) ** progress_of(step)
        items = []
        for ti in rng.choice(len(train_topos), size=batch_n, p=weights):
            topo = train_topos[ti]
            items.append((topo, *_augment(topo, int(rng.integers(topo.tms.shape[0])), cfg, gen, dev)))
        batch = make_batch(items, dev, sample_policies(batch_n, cfg, rng, dev))
        rescale_demands(batch, torch.as_tensor(np.exp(rng.uniform(np.log(scale_lo), np.log(scale_hi), batch_n)),
                                               dtype=torch.float32, device=dev))
        with torch.no_grad():
            ref = policy_objective(equal_split(batch), batch).clamp_min(1e-12)
        R = int(rng.choice(rounds_choices))
        outs = model(**model_inputs(batch), rounds=R, return_all=True)
        loss = 0.0
        wsum = 0.0
        for t, (split, _, _) in enumerate(outs):
            w = round_decay ** (len(outs) - 1 - t)
            loss = loss + w * (policy_objective(split, batch, tau) / ref).mean()
            wsum += w
        loss = loss / wsum
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            final_ratio = float((policy_objective(outs[-1][0], batch) / ref).mean())
        ema = final_ratio if ema is None else 0.98 * ema + 0.02 * final_ratio
        loss_value = float(loss.detach())
        rec = {"step": step, "loss": loss_value, "mlu_over_equal": final_ratio, "tau": tau,
               "lr": sched.get_last_lr()[0], "grad_norm": float(gnorm), "seconds": time.time() - t_start}
        done = time.time() - t_start > time_limit or step == steps
        if step % val_every == 0 or done:
            v = validate(model, val_topos, dev)
            rec["val_geomean"], rec["val_p90"], rec["val_score"] = v["geomean"], v["p90"], v["score"]
            rec["val_per_topology"], rec["val_policies"] = v["per_topology"], v["policies"]
            ckpt = {"model": model.state_dict(), "config": mcfg.to_dict(), "recipe": recipe, "step": step,
                    "val": v}
            torch.save(ckpt, out_dir / "last.pt")
            if v["score"] < best["score"]:
                best = dict(v, step=step)
                torch.save(ckpt, out_dir / "best.pt")
            log(f"step {step}: loss {loss_value:.4f} objective/equal(ema) {ema:.4f} val model/LP geomean "
                f"{v['geomean']:.4f} p90 {v['p90']:.4f} policies {v['policies']} score {v['score']:.4f} "
                f"({time.time() - t_start:.0f}s)")
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
        for R in cfg.sweep_rounds or (mcfg.rounds,):
            v = validate(model, val_topos, dev, rounds=int(R))
            rounds_sweep[str(R)] = {"geomean": v["geomean"], "policies": v["policies"], "score": v["score"]}
        log(f"validation model/LP geomean by rounds: {rounds_sweep}")
    summary = {"init": None if init is None else str(init), "rounds_sweep": rounds_sweep, "steps": step, "seconds": time.time() - t_start, "best_val": best, "device": str(dev),
               "train_topologies": [t.name for t in train_topos], "validation_topologies": [t.name for t in val_topos]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_init(model: TEHead, mcfg: ModelConfig, init: Path, dev) -> None:
    """Start weights from a checkpoint of the same architecture (RecipeError otherwise)."""
    try:
        ckpt = torch.load(init, map_location=dev, weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise RecipeError(f"--init {init}: cannot read the checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise RecipeError(f"--init {init}: not a checkpoint of tellm train (no model/config)")
    # The rounds share one set of weights, so a head fine-tuned to run fewer (or more) rounds starts from
    # any checkpoint of the same width and sharpness; everything else must match.
    theirs = {k: v for k, v in dict(ckpt["config"]).items() if k != "rounds"}
    ours = {k: v for k, v in mcfg.to_dict().items() if k != "rounds"}
    if theirs != ours:
        raise RecipeError(f"--init {init}: its model config {ckpt['config']} differs from the recipe's "
                          f"{mcfg.to_dict()} (only rounds may differ)")
    model.load_state_dict(ckpt["model"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="train the TE head from a prepared dataset (GPU-side entry point)")
    p.add_argument("--recipe", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--init", type=Path, default=None, help="start from this checkpoint's weights (fine-tune)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=YAML",
                   help="override a recipe value, e.g. --set model.hidden=128 (recorded in the checkpoint)")
    a = p.parse_args(argv)
    try:
        recipe = apply_overrides(load_recipe(a.recipe), a.set)
        model_config(recipe)
        train(recipe, a.dataset, a.out, a.device, progress=not a.no_progress, steps=a.steps,
              time_limit_seconds=a.time_limit, init=a.init)
    except RecipeError as exc:
        raise SystemExit(f"train: {exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
