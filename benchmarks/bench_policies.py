"""Per-policy optimality gap: each policy's objective reached by a router / that policy's LP optimum.

    python benchmarks/bench_policies.py --topology Abilene --topology geant --topology GtsCe --count 3

For every topology, generated TM (--families, --count each, scaled so that shortest-path routing
reaches MLU --load) and policy, the per-policy LP (tecore.objectives, HiGHS) over the default path set
gives the optimum objective; the gap of a router is objective(router's split) / LP objective (1.0 =
optimal). Routers:
- ``model``: the TE head (ONNX Runtime, CPU) with the policy vector as its ``policy`` input, when
  the model file exists (default inference/models/tellm-te.onnx); else the column is "pending";
- ``model_zero``: the same model with the all-zero (min-MLU) policy vector, scored under the policy:
  what the policy input is worth;
- ``shortest``: equal split over each pair's least-cost candidate paths (reference point);
- ``minmlu_lp``: the min-MLU LP split evaluated under the policy (what ignoring the policy costs).
Writes benchmarks/results/policies.json and prints a Markdown table (geo-mean and max of the gap).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tecore import compute_paths, generate, load_topology, scale_to_mlu, shortest_path_split
from tecore.objectives import evaluate_objective, solve_policy_lp
from tellm.inference.artifacts import DEFAULT_MODEL_PATH
from tellm.contract.onnx_io import onnx_inputs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
POLICIES = [("min_mlu", 0.0, 0.0), ("headroom(0.1)", 0.0, 0.1), ("headroom(0.3)", 0.0, 0.3),
            ("headroom(0.5)", 0.0, 0.5), ("latency_aware(0.1)", 0.1, 0.0), ("latency_aware(0.5)", 0.5, 0.0),
            ("latency_aware(1.0)", 1.0, 0.0)]


def open_model(path: Path):
    """(the model on one CPU thread, its sha256[:12]); (None, None) when the file is absent."""
    if not path.exists():
        return None, None
    from tellm.inference.session import load_model

    model = load_model(path, provider="cpu", threads=1)
    return model, model.sha256[:12]


def geo(x) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(x)))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topology", action="append", default=None)
    ap.add_argument("--count", type=int, default=3, help="TMs per family")
    ap.add_argument("--families", nargs="+", default=["gravity", "bimodal", "hotspot"])
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    ap.add_argument("--out", type=Path, default=RESULTS / "policies.json")
    ap.add_argument("--policies", nargs="+", default=None, metavar="LABEL",
                    help=f"only these policies (labels: {', '.join(p[0] for p in POLICIES)})")
    ap.add_argument("--append", action="store_true",
                    help="add this run's rows (and command) to an existing --out file measured on the same model")
    ap.add_argument("--table", type=Path, help="only print the Markdown table of an existing result file")
    args = ap.parse_args()
    if args.table:
        print_table(json.loads(args.table.read_text()))
        return
    topologies = args.topology or ["Abilene", "geant", "GtsCe"]
    policies = [p for p in POLICIES if args.policies is None or p[0] in args.policies]
    if args.policies and len(policies) != len(args.policies):
        raise SystemExit(f"unknown policy label in {args.policies}; known: {', '.join(p[0] for p in POLICIES)}")
    sess, model_hash = open_model(args.model)
    command = ("python benchmarks/bench_policies.py " + " ".join(f"--topology {t}" for t in topologies)
               + f" --count {args.count} --families {' '.join(args.families)} --load {args.load} --seed {args.seed}"
               + f" --k {args.k}" + (f" --policies {' '.join(args.policies)}" if args.policies else "")
               + (" --append" if args.append else ""))
    doc = {"command": command,
           "model": (str(args.model.resolve().relative_to(ROOT)) if args.model.resolve().is_relative_to(ROOT)
                  else str(args.model)) if sess else None, "model_sha256_12": model_hash,
           "model_status": "evaluated" if sess else "pending: no model file",
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_avg_1m_at_start": os.getloadavg()[0]},
           "tm": f"{', '.join(args.families)}: {args.count} each per topology, seed {args.seed}, scaled to "
                 f"shortest-path MLU {args.load}",
           "paths": f"default path set, k={args.k} (tecore.compute_paths default strategy)", "rows": []}
    if args.append:
        old = json.loads(args.out.read_text())
        if old.get("model_sha256_12") != model_hash:
            raise SystemExit(f"{args.out}: measured on another model file; not appending")
        old["commands"] = old.get("commands", [old.pop("command", "")]) + [command]
        old["rows"] = [r for r in old["rows"] if not (r["topology"] in {load_topology(t).name for t in topologies}
                                                       and r["policy"] in {p[0] for p in policies})]
        doc = old
    for name in topologies:
        topo = load_topology(name)
        paths = compute_paths(topo, k=args.k)
        sp_split = shortest_path_split(topo, paths)
        tms = [scale_to_mlu(topo, tm, args.load) for f, fam in enumerate(args.families)
               for tm in generate(topo, fam, args.count, seed=args.seed + f)]
        demands = [tm.pair_demands(paths.pairs) for tm in tms]
        minmlu = [solve_policy_lp(topo, paths, d) for d in demands]
        for label, lam, h in policies:
            gaps = {"model": [], "model_zero": [], "shortest": [], "minmlu_lp": []}
            lp_obj, lp_mlu, lp_stretch, lp_seconds, model_seconds, model_mlu, model_stretch = [], [], [], [], [], [], []
            for d, mm in zip(demands, minmlu):
                lp = solve_policy_lp(topo, paths, d, latency_weight=lam, headroom_fraction=h)
                lp_obj.append(lp.value.objective)
                lp_mlu.append(lp.value.mlu)
                lp_stretch.append(lp.value.latency_stretch)
                lp_seconds.append(lp.solve_seconds)
                gaps["shortest"].append(evaluate_objective(topo, paths, d, sp_split, lam, h).objective / lp.value.objective)
                gaps["minmlu_lp"].append(evaluate_objective(topo, paths, d, mm.split, lam, h).objective / lp.value.objective)
                if sess is not None:
                    vec = np.array([lam, h, 0, 0], dtype=np.float32)
                    feeds = onnx_inputs(topo, paths, d, policy=vec)
                    t0 = time.perf_counter()
                    split = sess.route(feeds).split.astype(np.float64)
                    model_seconds.append(time.perf_counter() - t0)
                    v = evaluate_objective(topo, paths, d, split, lam, h)
                    gaps["model"].append(v.objective / lp.value.objective)
                    feeds["policy"] = np.zeros(4, dtype=np.float32)
                    split0 = sess.route(feeds).split.astype(np.float64)
                    gaps["model_zero"].append(evaluate_objective(topo, paths, d, split0, lam, h).objective
                                              / lp.value.objective)
                    model_mlu.append(v.mlu)
                    model_stretch.append(v.latency_stretch)
            row = {"topology": topo.name, "nodes": topo.num_nodes, "links": topo.num_links, "pairs": paths.num_pairs,
                   "paths": paths.num_paths, "policy": label, "latency_weight": lam, "headroom_fraction": h,
                   "lp_objective_mean": float(np.mean(lp_obj)), "lp_mlu_mean": float(np.mean(lp_mlu)),
                   "lp_latency_stretch_mean": float(np.mean(lp_stretch)), "lp_solve_seconds_mean": float(np.mean(lp_seconds)),
                   "count": len(demands)}
            for k, g in gaps.items():
                if g:
                    row[f"gap_{k}_geomean"] = geo(g)
                    row[f"gap_{k}_max"] = float(np.max(g))
            if model_seconds:
                row["model_seconds_mean"] = float(np.mean(model_seconds))
                row["model_mlu_mean"] = float(np.mean(model_mlu))
                row["model_latency_stretch_mean"] = float(np.mean(model_stretch))
            doc["rows"].append(row)
            print(json.dumps(row), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(doc, indent=2) + "\n")  # after every row: a long run keeps its results
    print_table(doc)


def print_table(doc: dict) -> None:
    print()
    print("| topology | policy | LP objective | LP MLU | LP stretch | gap model (geo / max) | model MLU | model stretch "
          "| gap model, zero policy (geo / max) | gap shortest-path (geo / max) | gap min-MLU LP split (geo / max) "
          "| LP solve s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in doc["rows"]:
        has = "gap_model_geomean" in r
        model = f"{r['gap_model_geomean']:.3f} / {r['gap_model_max']:.3f}" if has else "pending"
        mm = f"{r['model_mlu_mean']:.3f}" if has else "-"
        ms = f"{r['model_latency_stretch_mean']:.3f}" if has else "-"
        mz = f"{r['gap_model_zero_geomean']:.3f} / {r['gap_model_zero_max']:.3f}" if has else "-"
        print(f"| {r['topology']} | {r['policy']} | {r['lp_objective_mean']:.3f} | {r['lp_mlu_mean']:.3f} | "
              f"{r['lp_latency_stretch_mean']:.3f} | {model} | {mm} | {ms} | {mz} | {r['gap_shortest_geomean']:.3f} / "
              f"{r['gap_shortest_max']:.3f} | {r['gap_minmlu_lp_geomean']:.3f} / {r['gap_minmlu_lp_max']:.3f} | "
              f"{r['lp_solve_seconds_mean']:.3f} |")

if __name__ == "__main__":
    main()
