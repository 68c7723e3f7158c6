#!/usr/bin/env python3
"""Path-LP / exact-optimum ratio per topology, TM family and path strategy.

    nice -n 10 python benchmarks/bench_paths_optimum.py --json benchmarks/results/paths_optimum.json

For every topology: draw --per-family TMs of each family with --tm-seed (held out: the optimum-seeded
strategy draws its own TMs far away from this seed), solve the exact optimum once per TM, then build
each --strategy (NAME:K[:MAX_STRETCH]) and solve the path LP per TM. Topology Zoo graphs get uniform
10 Gbit/s links; SNDlib networks keep their capacities, and --sndlib-tms adds their
real demand matrices as a fourth family. Needs ../shared/data (or TELLM_DATA_DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

TUNED = ["AttMpls", "Geant2012", "GtsCe", "UsCarrier", "Cogentco", "sndlib:geant", "sndlib:germany50"]
HELD_OUT = ["Abilene", "sndlib:abilene", "sndlib:nobel-eu", "sndlib:janos-us", "sndlib:cost266", "Deltacom", "Ion"]


def parse_strategy(spec: str) -> tuple[str, int, float | None]:
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"--strategy {spec!r}: expected NAME:K or NAME:K:MAX_STRETCH")
    return parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else None


def run_topology(name: str, strategies: list[str], per_family: int, tm_seed: int, sndlib_tms: int) -> dict:
    from tecore import load_topology, read_sndlib_demands
    from tecore.pathreport import evaluate_strategy, optimum_mlus, sample_tms
    from tecore.traffic import find_sndlib_demands

    topo = load_topology(name, capacity="auto" if name.startswith("sndlib:") else "uniform")
    tms = sample_tms(topo, per_family=per_family, seed=tm_seed)
    if sndlib_tms and name.startswith("sndlib:"):
        archive = find_sndlib_demands(topo.name)
        if archive is not None:
            tms += [("sndlib", tm) for tm in read_sndlib_demands(archive, topo, limit=sndlib_tms)]
    t0 = time.perf_counter()
    opt = optimum_mlus(topo, tms)
    out = {"topology": name, "nodes": topo.num_nodes, "links": topo.num_links,
           "opt_seconds_max": max(s for _, s in opt), "opt_wall_seconds": time.perf_counter() - t0,
           "strategies": []}
    for spec in strategies:
        strat, k, stretch = parse_strategy(spec)
        rep = evaluate_strategy(topo, tms, opt, strat, k, stretch, workers=1)
        out["strategies"].append(rep.as_dict())
        print(f"{name:18s} {spec:24s} geo {rep.ratio_geomean:.4f} worst {rep.ratio_worst:.4f} "
              f"stretch mean {rep.stretch_mean:.2f} p95 {rep.stretch_p95:.2f} build {rep.build_seconds:.1f}s "
              + " ".join(f"{f}:{v['geomean']:.3f}/{v['worst']:.3f}" for f, v in rep.ratio_by_family.items()),
              file=sys.stderr, flush=True)
    return out


def markdown(doc: dict) -> str:
    """The README table: per topology and strategy, geo-mean/worst ratio per family, stretch, build time."""
    fams = list(dict.fromkeys(f for r in doc["results"] for st in r["strategies"] for f in st["ratio_by_family"]))
    head = ["topology (nodes)", "paths", *[f"{f} geo / worst" for f in fams], "all geo / worst",
            "stretch mean / p95", "build s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["results"]:
        tuned = "" if r["topology"] in doc["tuned_on"] else " *"
        for st in r["strategies"]:
            cells = [f"{r['topology']} ({r['nodes']}){tuned}", f"{st['strategy']} k={st['k']}"]
            cells += [f"{st['ratio_by_family'][f]['geomean']:.3f} / {st['ratio_by_family'][f]['worst']:.3f}"
                      if f in st["ratio_by_family"] else "-" for f in fams]
            cells += [f"{st['ratio_geomean']:.3f} / {st['ratio_worst']:.3f}",
                      f"{st['stretch_mean']:.2f} / {st['stretch_p95']:.2f}", f"{st['build_seconds']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", action="append", default=None,
                    help="repeatable; default: the tuning topologies plus held-out ones")
    ap.add_argument("--strategy", action="append", default=None, metavar="NAME:K[:MAX_STRETCH]",
                    help="repeatable; default: shortest:4 and the default path set")
    ap.add_argument("--per-family", type=int, default=3, help="TMs per family (gravity, hotspot, bimodal)")
    ap.add_argument("--tm-seed", type=int, default=0)
    ap.add_argument("--sndlib-tms", type=int, default=3, help="real SNDlib TMs added on SNDlib networks")
    ap.add_argument("--jobs", type=int, default=1, help="topologies evaluated in parallel")
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "paths_optimum.json")
    ap.add_argument("--table", type=Path, nargs="+", default=None, metavar="JSON",
                    help="print the markdown table of earlier runs' JSON files (in order) and exit")
    args = ap.parse_args(argv)
    if args.table:
        results: dict[str, dict] = {}
        for f in args.table:  # a topology in several files: the first file's run counts
            for r in json.loads(f.read_text())["results"]:
                results.setdefault(r["topology"], r)
        order = TUNED + HELD_OUT
        rows = sorted(results.values(), key=lambda r: order.index(r["topology"]) if r["topology"] in order else 99)
        print(markdown({"tuned_on": TUNED, "results": rows}))
        return 0
    from tecore.strategies import DEFAULT_K, DEFAULT_MAX_STRETCH, DEFAULT_STRATEGY

    default = f"{DEFAULT_STRATEGY}:{DEFAULT_K}" + (f":{DEFAULT_MAX_STRETCH:g}" if DEFAULT_MAX_STRETCH else "")
    strategies = args.strategy or list(dict.fromkeys(["shortest:4", default]))
    topologies = args.topology or TUNED + HELD_OUT
    t0 = time.perf_counter()
    doc = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           "per_family": args.per_family, "tm_seed": args.tm_seed, "strategies": strategies,
           "tuned_on": TUNED, "cpu_count": os.cpu_count(), "results": []}

    def save(result: dict) -> None:  # after every topology, so a long sweep keeps what it finished
        doc["results"].append(result)
        doc["results"].sort(key=lambda r: topologies.index(r["topology"]))
        doc["wall_seconds"] = time.perf_counter() - t0
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_topology, t, strategies, args.per_family, args.tm_seed, args.sndlib_tms)
                       for t in topologies]
            for fut in as_completed(futures):
                save(fut.result())
    else:
        for t in topologies:
            save(run_topology(t, strategies, args.per_family, args.tm_seed, args.sndlib_tms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
