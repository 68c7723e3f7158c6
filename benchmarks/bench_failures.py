#!/usr/bin/env python3
"""Single link failures: stranded pairs before/after coverage, and head / path LP / exact optimum on the
surviving network.

    nice -n 10 python benchmarks/bench_failures.py --topology Geant2012 --topology sndlib:germany50 \\
        --json benchmarks/results/failures.json

Per topology: the default path set's single-failure coverage (and, with --before NAME=FILE.npz, that of
an earlier path set of the same topology), then for every non-bridge link failure (or the first
--max-failures of them, in link order) and --tms gravity TMs scaled so ECMP reaches --load on the
intact network: stranded pairs, and the MLU of each --router on the surviving network (routers of
`tellm eval`: ecmp, lp, model, opt). Needs ../shared/data (or TELLM_DATA_DIR).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace


def geomean(xs) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return float(math.exp(sum(map(math.log, xs)) / len(xs))) if xs else float("nan")


def load_any_version(file: str):
    """A PathSet file of any cache version (the layout has not changed; only what strategies compute)."""
    import numpy as np

    from tecore import PathSet

    with np.load(file, allow_pickle=False) as z:
        return PathSet(str(z["topology_hash"]), int(z["num_nodes"]), int(z["num_links"]), z["pairs"], z["pair_ptr"],
                       z["path_ptr"], z["path_links"], str(z["strategy"]), int(z["k"]))


def run_topology(name: str, routers: list[str], tms: int, load: float, max_failures: int | None,
                 before: str | None) -> dict:
    from tecore import compute_paths, generate, load_topology, scale_to_mlu
    from tecore.coverage import coverage
    from tecore.failures import non_bridge_failures, routable_tm, stranded_pairs
    from tellm.commands.eval import ROUTERS

    topo = load_topology(name, capacity="auto" if name.startswith("sndlib:") else "uniform")
    t0 = time.perf_counter()
    paths = compute_paths(topo, workers=1)
    out = {"topology": name, "nodes": topo.num_nodes, "links": topo.num_links, "strategy": paths.strategy,
           "k": paths.k, "paths_seconds": time.perf_counter() - t0, "coverage_after": coverage(topo, paths).as_dict(topo)}
    if before:
        old = load_any_version(before)
        out["coverage_before"] = coverage(topo, old).as_dict(topo)
    failures = non_bridge_failures(topo)
    out["non_bridge_failures"] = len(failures)
    failures = failures[:max_failures] if max_failures else failures
    args = SimpleNamespace(lp_time_limit=None, model=None, model_providers="CPUExecutionProvider")
    fns = {r: ROUTERS[r](topo, paths, args) for r in routers}
    sample = [scale_to_mlu(topo, tm, load) for tm in generate(topo, "gravity", tms, seed=0)]
    rows = []
    for f in failures:
        up = f.link_up(topo)
        stranded = int(stranded_pairs(topo, paths, up).size)
        for tm in sample:
            row = {"failure": f.name, "tm": tm.label, "stranded_pairs": stranded}
            for r, fn in fns.items():
                res = fn(routable_tm(topo, tm, up), up)
                row[f"mlu_{r}"], row[f"{r}_seconds"] = res.mlu, res.seconds
            rows.append(row)
        print(f"{name} {f.name}: stranded {stranded} "
              + " ".join(f"{r} {rows[-1][f'mlu_{r}']:.4f}" for r in routers), file=sys.stderr, flush=True)
    out["failures_run"] = len(failures)
    out["rows"] = rows
    summ = {}
    for a, b in [("model", "lp"), ("model", "opt"), ("lp", "opt"), ("ecmp", "opt")]:
        if a in routers and b in routers:
            ratios = [r[f"mlu_{a}"] / r[f"mlu_{b}"] for r in rows if r[f"mlu_{b}"] > 0]
            summ[f"{a}_over_{b}_geomean"] = geomean(ratios)
            summ[f"{a}_over_{b}_worst"] = max(ratios, default=float("nan"))
    out["summary"] = summ
    return out


def markdown(doc: dict) -> str:
    """The README table: per topology, coverage before/after and the routers' ratios over all rows."""
    head = ["topology", "non-bridge failures (run)", "stranded pairs before: failures / total / worst",
            "stranded after", "head / LP geo (worst)", "LP / opt geo (worst)", "head / opt geo (worst)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["results"]:
        b = r.get("coverage_before")
        before = "-" if b is None else (f"{len(b['stranding_failures'])} / {b['stranded_pairs_total']} / "
                                        f"{max(b['stranding_failures'].values(), default=0)}")
        after = max((x["stranded_pairs"] for x in r["rows"]), default=0)
        sm = r["summary"]

        def cell(a, b):
            return f"{sm[f'{a}_over_{b}_geomean']:.4f} ({sm[f'{a}_over_{b}_worst']:.4f})" if f"{a}_over_{b}_geomean" in sm else "-"

        lines.append(f"| {r['topology']} | {r['non_bridge_failures']} ({r['failures_run']}) | {before} | {after} | "
                     f"{cell('model', 'lp')} | {cell('lp', 'opt')} | {cell('model', 'opt')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", action="append", default=[])
    ap.add_argument("--router", default="ecmp,lp,model,opt")
    ap.add_argument("--tms", type=int, default=3, help="gravity TMs per failure (seed 0)")
    ap.add_argument("--load", type=float, default=0.8, help="ECMP MLU of each TM on the intact network")
    ap.add_argument("--max-failures", type=int, default=None, help="only the first N non-bridge failures")
    ap.add_argument("--before", action="append", default=[], metavar="NAME=FILE.npz",
                    help="an earlier path set of topology NAME whose coverage is reported as 'before'")
    ap.add_argument("--table", type=Path, default=None, metavar="JSON", help="print the README table of a run and exit")
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "failures.json")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return 0
    before = dict(x.split("=", 1) for x in args.before)
    doc = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           "load_average_start": os.getloadavg(), "cpu_count": os.cpu_count(), "results": []}
    for name in args.topology:
        doc["results"].append(run_topology(name, args.router.split(","), args.tms, args.load, args.max_failures,
                                           before.get(name)))
        doc["load_average_end"] = os.getloadavg()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
