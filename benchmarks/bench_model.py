"""Benchmark the TE head (ONNX Runtime CPU) against the path LP (HiGHS) and ECMP on held-out topologies.

For every topology and TM: MLU of the head's split (scored in float64 on the exact demands), the LP
optimum over the same candidate paths, hop-by-hop ECMP, and the wall time of the head (ORT run only,
after one warm-up) and of HiGHS (solve only). Writes one JSON document; benchmarks/README.md has the
table and the exact commands.

Kdl (754 nodes, 2.27M candidate paths): the full path LP is too slow here, so with
``--lp-top-pairs M`` the LP *and the head* are run on the same restricted instance that keeps only
the M largest demands (all other demands zero); the JSON says so per row (``lp_instance``). The head
is also timed on the full TM (no LP to compare with there).

    python benchmarks/bench_model.py --out benchmarks/results/model.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np

DEFAULT_CASES = [
    # (topology, TM source, count): generated families are cycled through, 2 TMs per family.
    ("zoo:Abilene", "families", 10),  # a *validation* topology (seen for model selection): timing row only
    ("sndlib:geant", "sndlib", 60),
    ("zoo:Geant2012", "families", 10),
    ("zoo:GtsCe", "families", 5),
    ("zoo:UsCarrier", "families", 5),
    ("zoo:Cogentco", "families", 5),
    ("zoo:Kdl", "families", 2),
]
FAMILIES = ["gravity", "bimodal", "uniform", "poisson", "hotspot"]


def geomean(xs):
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return float(math.exp(sum(map(math.log, xs)) / len(xs))) if xs else float("nan")


def tms_for(topo, source: str, count: int, seed: int):
    from tecore import generate, read_sndlib_demands
    from tecore.traffic import find_sndlib_demands

    if source == "sndlib":
        all_tms = list(read_sndlib_demands(find_sndlib_demands(topo.name), topo))
        idx = np.linspace(0, len(all_tms) - 1, min(count, len(all_tms))).round().astype(int)
        return [all_tms[i] for i in idx]  # spread over the whole 4-day archive
    out = []
    for i in range(count):
        fam = FAMILIES[i % len(FAMILIES)]
        out.append(generate(topo, fam, 1, seed=seed + i)[0])
    return out


def restrict_top(d: np.ndarray, m: int | None) -> np.ndarray:
    if m is None or m >= np.count_nonzero(d):
        return d
    keep = np.argpartition(d, -m)[-m:]
    out = np.zeros_like(d)
    out[keep] = d[keep]
    return out


def bench_case(name, source, count, args, head):
    from tecore import compute_paths, ecmp_mlu, load_topology, solve_min_mlu, split_mlu
    from tecore.optimum import solve_optimum
    from tecore.strategies import DEFAULT_STRATEGY
    from tellm.contract.onnx_io import onnx_inputs

    topo = load_topology(name)
    strategy = args.paths_strategy or DEFAULT_STRATEGY
    paths = compute_paths(topo, k=4, strategy=strategy, progress=False)
    static = onnx_inputs(topo, paths, np.zeros(paths.num_pairs))
    tms = tms_for(topo, source, count, args.seed)
    big = paths.num_paths > args.big_paths
    rows = []
    if not args.no_warmup:
        head.route(dict(static, demand_bps=np.ones(paths.num_pairs, dtype=np.float32)))  # warm-up, not timed
    for n_tm, tm in enumerate(tms):
        d_full = tm.pair_demands(paths.pairs)
        d = restrict_top(d_full, args.lp_top_pairs) if big else d_full
        row = {"tm": tm.label, "lp_instance": (f"top {args.lp_top_pairs} demands of {np.count_nonzero(d_full)}"
                                               if big and args.lp_top_pairs else "full")}
        inputs = dict(static, demand_bps=d.astype(np.float32))
        t0 = time.perf_counter()
        out = head.route(inputs)
        row["model_seconds"] = time.perf_counter() - t0
        split = out.split.astype(np.float64)
        sums = np.add.reduceat(split, paths.pair_ptr[:-1])
        row["split_valid"] = bool(np.all(np.isfinite(split)) and split.min() >= -1e-6
                                  and np.abs(sums - 1).max() < 1e-4)
        row["mlu_model"] = split_mlu(topo, paths, split, d)
        if big and n_tm == 0 and not args.no_full_tm:  # the full TM once: same cost as the restricted one (all pairs are inputs)
            t0 = time.perf_counter()
            head.route(dict(static, demand_bps=d_full.astype(np.float32)))
            row["model_seconds_full_tm"] = time.perf_counter() - t0
        try:
            lp = solve_min_mlu(topo, paths, d, time_limit_seconds=args.lp_time_limit)
            row["mlu_lp"], row["lp_seconds"] = lp.mlu, lp.solve_seconds
            row["lp_build_seconds"] = lp.build_seconds
        except Exception as exc:  # noqa: BLE001 - recorded, never hidden
            row["mlu_lp"], row["lp_error"] = float("nan"), str(exc)
        if not big:
            from tecore import TrafficMatrix

            row["mlu_ecmp"] = ecmp_mlu(topo, tm)
        else:
            dense = np.zeros((topo.num_nodes, topo.num_nodes))
            dense[paths.pairs[:, 0], paths.pairs[:, 1]] = d
            from tecore import TrafficMatrix

            row["mlu_ecmp"] = ecmp_mlu(topo, TrafficMatrix(dense))
        if not big and not args.no_opt:  # the exact optimum over all paths (tecore.optimum)
            row["mlu_opt"] = solve_optimum(topo, tm).mlu
            row["model_over_opt"] = row["mlu_model"] / row["mlu_opt"] if row["mlu_opt"] > 0 else float("nan")
        row["model_over_lp"] = row["mlu_model"] / row["mlu_lp"] if row["mlu_lp"] > 0 else float("nan")
        row["ecmp_over_lp"] = row["mlu_ecmp"] / row["mlu_lp"] if row["mlu_lp"] > 0 else float("nan")
        rows.append(row)
        print(f"{name} {tm.label}: model/LP {row['model_over_lp']:.4f} ECMP/LP {row['ecmp_over_lp']:.4f} "
              f"model {row['model_seconds'] * 1e3:.1f} ms LP {row.get('lp_seconds', float('nan')):.2f} s", flush=True)
    meta = {"topology": name, "nodes": topo.num_nodes, "links": topo.num_links, "pairs": paths.num_pairs,
            "paths": paths.num_paths, "nnz": int(paths.path_links.size), "tm_source": source,
            "paths_strategy": paths.strategy}
    return summarize(meta, rows), rows


def summarize(meta: dict, rows: list[dict]) -> dict:
    ratios = [r["model_over_lp"] for r in rows]
    summary = dict(meta, **{
        "tms": len(rows),
        "lp_instance": rows[0]["lp_instance"] if rows else "",
        "model_over_lp_geomean": geomean(ratios),
        "model_over_lp_p90": float(np.nanpercentile(ratios, 90)) if rows else float("nan"),
        "model_over_lp_max": float(np.nanmax(ratios)) if rows else float("nan"),
        "ecmp_over_lp_geomean": geomean([r["ecmp_over_lp"] for r in rows]),
        "model_better_than_ecmp_fraction": float(np.mean([r["mlu_model"] < r["mlu_ecmp"] for r in rows])),
        "all_splits_valid": all(r["split_valid"] for r in rows),
        "model_seconds_median": statistics.median(r["model_seconds"] for r in rows),
        "lp_seconds_median": statistics.median(r["lp_seconds"] for r in rows if "lp_seconds" in r)
        if any("lp_seconds" in r for r in rows) else float("nan"),
    })
    opt = [r["model_over_opt"] for r in rows if "model_over_opt" in r]
    if opt:
        summary["model_over_opt_geomean"], summary["model_over_opt_max"] = geomean(opt), float(np.nanmax(opt))
        summary["lp_over_opt_geomean"] = geomean([r["mlu_lp"] / r["mlu_opt"] for r in rows if "mlu_opt" in r])
    full = [r["model_seconds_full_tm"] for r in rows if "model_seconds_full_tm" in r]
    if full:
        summary["model_seconds_full_tm"] = full[0]
    summary["lp_over_model_time"] = summary["lp_seconds_median"] / summary["model_seconds_median"]
    return summary


def merge(out: Path, others: list[Path]) -> int:
    """Fold the rows of other result files (same model file) into ``out``, topology by topology."""
    doc = json.loads(out.read_text())
    for other in others:
        o = json.loads(other.read_text())
        if o["model_sha256"] != doc["model_sha256"]:
            raise SystemExit(f"{other}: measured on another model file")
        for t in o["topologies"]:
            name = t["topology"]
            rows = doc["rows"].get(name, []) + o["rows"][name]
            meta = {k: t[k] for k in ("topology", "nodes", "links", "pairs", "paths", "nnz", "tm_source",
                                      "paths_strategy") if k in t}
            doc["rows"][name] = rows
            doc["topologies"] = [x for x in doc["topologies"] if x["topology"] != name] + [summarize(meta, rows)]
    out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    print(f"merged {', '.join(map(str, others))} into {out}")
    return 0


def main(argv=None) -> int:
    from tellm.inference.artifacts import DEFAULT_MODEL_PATH
    from tellm.inference.session import load_model, sha256_file

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/model.json"))
    p.add_argument("--only", action="append", default=None, help="run only these topologies (repeatable)")
    p.add_argument("--count", type=int, default=None, help="override the TM count of every case")
    p.add_argument("--seed", type=int, default=1000, help="TM seed (training used other seeds)")
    p.add_argument("--lp-top-pairs", type=int, default=20000,
                   help="for topologies above --big-paths: LP (and head) on the M largest demands only")
    p.add_argument("--big-paths", type=int, default=1_000_000, help="path count above which --lp-top-pairs applies")
    p.add_argument("--lp-time-limit", type=float, default=1800.0)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--paths-strategy", default=None, help="candidate-path strategy (default: tecore's default)")
    p.add_argument("--no-opt", action="store_true", help="skip the exact optimum over all paths")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="FILE",
                   help="only fold these result files' rows into --out (runs made in parallel)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run per topology")
    p.add_argument("--no-full-tm", action="store_true",
                   help="big topologies: skip timing the head on the full TM (its cost does not depend on the "
                        "demand values: all pairs are inputs in both cases)")
    p.add_argument("--update-card", action="store_true",
                   help="only copy the measured summaries in --out (and gpu_timing.json beside it) into the "
                        "model card, if they were measured on this very model file")
    a = p.parse_args(argv)
    if a.update_card:
        return update_card(a.model, a.out)
    if a.merge:
        return merge(a.out, a.merge)
    head = load_model(a.model, provider="cpu", threads=a.threads)
    doc = {"model": str(a.model), "model_sha256": sha256_file(a.model), "ort_threads": a.threads,
           "cpu_count": os.cpu_count(), "seed": a.seed, "topologies": [], "rows": {}}
    if a.out.exists():
        old = json.loads(a.out.read_text())
        if old.get("model_sha256") == doc["model_sha256"]:
            doc["topologies"] = [t for t in old["topologies"] if not a.only or t["topology"] not in a.only]
            doc["rows"] = {k: v for k, v in old["rows"].items() if not a.only or k not in a.only}
    for name, source, count in DEFAULT_CASES:
        if a.only and name not in a.only:
            continue
        summary, rows = bench_case(name, source, a.count or count, a, head)
        doc["topologies"] = [t for t in doc["topologies"] if t["topology"] != name] + [summary]
        doc["rows"][name] = rows
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=2, default=float) + "\n")  # after each topology: partial results survive
        print(json.dumps(summary, indent=2, default=float), flush=True)
    return 0


def update_card(model: Path, results: Path) -> int:
    from tellm.inference.session import sha256_file

    card_file = model.with_suffix(".json")
    card = json.loads(card_file.read_text())
    doc = json.loads(results.read_text())
    sha = sha256_file(model)
    if doc.get("model_sha256") != sha or card.get("sha256") != sha:
        raise SystemExit(f"{results} was not measured on {model} (sha256 differs): run the benchmark again")
    keys = ("topology", "nodes", "pairs", "paths", "tm_source", "tms", "lp_instance", "model_over_lp_geomean",
            "model_over_lp_p90", "model_over_lp_max", "ecmp_over_lp_geomean", "all_splits_valid",
            "model_seconds_median", "lp_seconds_median", "model_seconds_full_tm")
    card["metrics"]["held_out_ort_cpu"] = {
        "command": "python benchmarks/bench_model.py --out benchmarks/results/model.json",
        "machine": f"{doc['cpu_count']} shared CPU cores, ONNX Runtime {doc['ort_threads']} threads",
        "topologies": [{k: t[k] for k in keys if k in t} for t in doc["topologies"]]}
    summary_file = model.parent / "tellm-te-train-summary.json"
    if summary_file.exists():
        ts = json.loads(summary_file.read_text())
        card["metrics"]["validation_model_over_lp_by_rounds"] = ts["rounds_sweep"]
        card["metrics"]["validation_note"] = (
            "validation_model_over_lp was measured during training at the recipe's 12 rounds; the ONNX graph "
            "has the rounds in model_config (chosen on validation, see validation_model_over_lp_by_rounds, "
            "capped where ORT CPU still matches PyTorch within 1e-4)")
        card["training"]["run"] = {
            "device": "NVIDIA H100 80GB HBM3, torch 2.11.0+cu130",
            "steps": ts["steps"], "seconds": ts["seconds"], "best_step": ts["best_val"]["step"],
            "selection": "3 recipe variants trained side by side on one H100 (scripts/train_te_head_gpu.sh: A = recipe "
                         "as shipped; B: hidden 96, lr 0.0015; C: policy_prob 0.35, round_loss_decay 0.5); "
                         "A kept for the best validation geo-mean across rounds",
            "log": "inference/models/tellm-te-train-log.jsonl.gz"}
    gpu = results.parent / "gpu_timing.json"
    if gpu.exists():
        g = json.loads(gpu.read_text())
        card["metrics"]["gpu_torch_cuda"] = {
            "device": g["device"], "torch": g["torch"], "rounds": g["rounds"],
            "topologies": [{k: t.get(k) for k in ("topology", "paths", "nnz", "scatter_eager_ms", "csr_eager_ms",
                                                   "csr_cuda_graph_ms", "csr_eager_with_host_copies_ms",
                                                   "peak_gpu_memory_gib")} for t in g["topologies"]]}
    card_file.write_text(json.dumps(card, indent=2, default=float) + "\n")
    print(f"updated {card_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
