"""Foundation benchmarks: candidate-path build time (Kdl) and HiGHS path-LP time (GEANT, GtsCe).

    python benchmarks/bench_foundation.py paths --topology Kdl --k 4
    python benchmarks/bench_foundation.py lp --topology geant --topology GtsCe --count 3 [--solver ipm]

Writes benchmarks/results/foundation_<what>.json (merged per topology) and prints a table.
Path timing is a cold build (cache bypassed). LP timing is HiGHS's run() only; model build time is
reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tecore import compute_paths, generate, load_topology, scale_to_mlu, solve_min_mlu

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_avg_1m_at_start": os.getloadavg()[0]}


def save(name: str, key: str, entry: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    f = RESULTS / f"foundation_{name}.json"
    doc = json.loads(f.read_text()) if f.exists() else {}
    doc[key] = entry
    f.write_text(json.dumps(doc, indent=2) + "\n")


def bench_paths(args) -> None:
    for name in args.topology:
        topo = load_topology(name)
        m = machine()
        t0 = time.perf_counter()
        ps = compute_paths(topo, k=args.k, strategy=args.strategy, use_cache=False, workers=args.workers,
                           progress=True)
        seconds = time.perf_counter() - t0
        entry = {"topology": topo.name, "nodes": topo.num_nodes, "links": topo.num_links, "k": args.k,
                 "strategy": ps.strategy, "pairs": ps.num_pairs, "paths": ps.num_paths,
                 "seconds": round(seconds, 2), "workers": args.workers or os.cpu_count(), "machine": m,
                 "command": f"python benchmarks/bench_foundation.py paths --topology {name} --k {args.k}"}
        print(f"{topo.name}: {ps.num_pairs} pairs, {ps.num_paths} paths, k={args.k}: {seconds:.1f} s")
        save("paths", f"{topo.name}-k{args.k}-{ps.strategy}", entry)


def bench_lp(args) -> None:
    for name in args.topology:
        topo = load_topology(name)
        ps = compute_paths(topo, k=args.k, strategy=args.strategy)
        rows = []
        for tm in generate(topo, args.tm, args.count, seed=args.seed):
            tm = scale_to_mlu(topo, tm, 0.8)
            r = solve_min_mlu(topo, ps, tm.pair_demands(ps.pairs), solver=args.solver)
            rows.append({"tm": tm.label, "mlu_lp": r.mlu, "solve_seconds": r.solve_seconds,
                         "build_seconds": r.build_seconds, "variables": r.num_variables,
                         "constraints": r.num_constraints})
            print(f"{topo.name} {tm.label}: mlu {r.mlu:.4f}, solve {r.solve_seconds:.3f} s, "
                  f"build {r.build_seconds:.3f} s, {r.num_variables} vars, {r.num_constraints} rows")
        solve = np.array([r["solve_seconds"] for r in rows])
        entry = {"topology": topo.name, "nodes": topo.num_nodes, "links": topo.num_links, "k": args.k,
                 "pairs": ps.num_pairs, "paths": ps.num_paths, "strategy": ps.strategy, "tm": args.tm,
                 "solver": args.solver,
                 "solve_seconds_median": float(np.median(solve)), "solve_seconds_max": float(solve.max()),
                 "rows": rows, "machine": machine(),
                 "command": f"python benchmarks/bench_foundation.py lp --topology {name} --count {args.count}"}
        save("lp", f"{topo.name}-k{args.k}-{args.tm}-{args.solver}", entry)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("paths")
    a.add_argument("--topology", action="append", required=True)
    a.add_argument("--k", type=int, default=4)
    a.add_argument("--strategy", default="shortest")
    a.add_argument("--workers", type=int, default=None)
    a.set_defaults(func=bench_paths)
    b = sub.add_parser("lp")
    b.add_argument("--topology", action="append", required=True)
    b.add_argument("--k", type=int, default=4)
    b.add_argument("--tm", default="gravity")
    b.add_argument("--count", type=int, default=3)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--solver", default="choose", help="HiGHS solver: choose | simplex | ipm | pdlp")
    b.add_argument("--strategy", default="shortest", help="candidate path strategy (hop-shortest by default)")
    b.set_defaults(func=bench_lp)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
