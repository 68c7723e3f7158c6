"""``tellm paths``: build (and cache) the candidate path set of a topology, and report what it costs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tellm.errors import CLIError

from . import common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "paths", help="build and cache candidate paths for a topology; report their cost against the optimum",
        description="Compute up to k loop-free candidate paths per ordered node pair, cache them on disk "
                    "(keyed by topology hash and options) and print a summary with their stretch. "
                    "--report compares strategies and k: for a sample of gravity, hot-spot and bimodal "
                    "TMs it solves the exact min-MLU optimum over all paths (multicommodity-flow LP) and "
                    "the LP over each candidate path set, and prints the ratio path-LP / optimum "
                    "(1.0 = the path set loses nothing), the path stretch, the build time and the single-failure "
                    "coverage: of the (pair, link) combinations whose link may fail without cutting the "
                    "pair, how many keep a candidate path, and which failures strand pairs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_topology_args(p)
    common.add_path_args(p)
    p.add_argument("--no-cache", action="store_true", help="recompute even when a cached set exists")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="write the path set as JSON: {\"paths\": {\"src->dst\": [[node, ...], ...]}, ...}")
    r = p.add_argument_group("report")
    r.add_argument("--report", action="store_true",
                   help="compare strategies and k against the exact optimum on sample TMs")
    r.add_argument("--report-strategies", default=None, metavar="A,B",
                   help="strategies to compare (default: all)")
    r.add_argument("--report-k", default="4,8", metavar="K,K", help="values of k to compare")
    r.add_argument("--tms-per-family", type=int, default=3, help="sample TMs per family in the report")
    r.add_argument("--tm-seed", type=int, default=0, help="seed of the report's sample TMs")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="write the summary (and the report) as JSON; '-' for stdout")
    p.set_defaults(func=run)


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise CLIError(f"{what} is empty")
    return vals


def run(args) -> int:
    import numpy as np
    from rich.console import Console

    from tecore.coverage import coverage
    from tecore.stretch import path_stretch
    from tecore.strategies import STRATEGIES

    import sys

    to_stderr = args.json is not None and str(args.json) == "-"
    # The report table is wide: keep it whole in pipes and CI logs instead of truncating cells.
    tty = (sys.stderr if to_stderr else sys.stdout).isatty()
    console = Console(stderr=to_stderr, width=None if tty else 200)
    topo = common.load_topology_from_args(args)
    t0 = time.perf_counter()
    ps = common.paths_from_args(args, topo, console, use_cache=not args.no_cache)
    seconds = time.perf_counter() - t0
    hops = ps.path_hops
    stretch = path_stretch(topo, ps, "hop")
    console.print(topo.summary())
    for note in topo.notes:
        console.print(f"  note: {note}")
    console.print(f"{ps.num_pairs} pairs, {ps.num_paths} paths ({ps.strategy}, k={ps.k}"
                  + (f", max stretch {args.max_stretch:g} {args.stretch_metric}" if args.max_stretch else "")
                  + f"); {np.mean(ps.paths_per_pair):.2f} paths/pair, hops mean {hops.mean():.2f} max "
                  f"{hops.max()}; hop stretch mean {stretch.mean():.2f} p95 {np.percentile(stretch, 95):.2f} "
                  f"max {stretch.max():.2f}; {seconds:.1f} s")
    cover = coverage(topo, ps)
    console.print(cover.summary(topo))
    doc = {"topology": topo.name, "topology_hash": topo.content_hash, "nodes": topo.num_nodes,
           "links": topo.num_links, "strategy": ps.strategy, "k": ps.k, "max_stretch": args.max_stretch,
           "stretch_metric": args.stretch_metric, "pairs": ps.num_pairs, "paths": ps.num_paths,
           "build_seconds": seconds, "stretch_mean": float(stretch.mean()),
           "stretch_p95": float(np.percentile(stretch, 95)), "stretch_max": float(stretch.max()),
           "coverage": cover.as_dict(topo)}
    if args.out:
        common.write_json(args.out, {"topology": topo.name, "topology_hash": topo.content_hash,
                                     "strategy": ps.strategy, "k": ps.k, "paths": ps.to_node_lists(topo)})
    if args.report:
        doc["report"] = _report(args, topo, console, STRATEGIES)
    if args.json:
        common.write_json(args.json, doc)
    return 0


def _report(args, topo, console, strategies_known) -> list[dict]:
    from rich.table import Table

    from tecore.lp import LPError
    from tecore.pathreport import evaluate_strategy, optimum_mlus, sample_tms

    names = [x.strip() for x in (args.report_strategies or ",".join(strategies_known)).split(",") if x.strip()]
    unknown = [n for n in names if n not in strategies_known]
    if unknown:
        raise CLIError(f"unknown strategy {unknown[0]!r}; known: {', '.join(strategies_known)}")
    ks = _int_list(args.report_k, "--report-k")
    if any(not 1 <= k <= 64 for k in ks):
        raise CLIError("--report-k values must be between 1 and 64")
    if args.tms_per_family < 1:
        raise CLIError("--tms-per-family must be >= 1")
    tms = sample_tms(topo, per_family=args.tms_per_family, seed=args.tm_seed)
    try:
        opt = optimum_mlus(topo, tms)
        reports = []
        for name in common.progress(names, "strategies", console):
            for k in ks:
                reports.append(evaluate_strategy(topo, tms, opt, name, k, args.max_stretch,
                                                 seed=args.paths_seed, workers=args.workers))
    except LPError as exc:
        raise CLIError(f"report: {exc}") from None
    families = list(dict.fromkeys(f for f, _ in tms))
    table = Table(title=f"{topo.name}: path-LP / exact optimum over {len(tms)} TMs "
                        f"({args.tms_per_family} each of {', '.join(families)}; seed {args.tm_seed})")
    for col in ["strategy", "k", "geo-mean", "worst", *[f"{f} geo/worst" for f in families],
                "stretch mean", "stretch p95", "cover %", "strand", "paths", "build s"]:
        table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
    for rep in reports:
        table.add_row(rep.strategy, str(rep.k), f"{rep.ratio_geomean:.4f}", f"{rep.ratio_worst:.4f}",
                      *[f"{rep.ratio_by_family[f]['geomean']:.3f}/{rep.ratio_by_family[f]['worst']:.3f}"
                        for f in families],
                      f"{rep.stretch_mean:.2f}", f"{rep.stretch_p95:.2f}",
                      f"{100 * rep.coverage['ratio']:.2f}",
                      f"{len(rep.coverage['stranding_failures'])}/{rep.coverage['stranded_pairs_total']}",
                      str(rep.num_paths),
                      f"{rep.build_seconds:.1f}")
    console.print(table)
    console.print("cover %: single-failure coverage (pairs x links whose loss the pair survives that keep a "
                  "candidate path); strand: failures that strand pairs / stranded pairs over all of them")
    return [r.as_dict() for r in reports]
