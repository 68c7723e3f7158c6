"""``tellm eval``: compare routers (ECMP, the path LP, the TE head, ...) on the same TMs."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tellm.errors import CLIError

from . import common


@dataclass
class RouterOutcome:
    mlu: float
    seconds: float


# A router factory is called once per run with (topology, paths, args) and returns a function that
# routes one TM, optionally with some links down (``link_up`` float [L], 1 up / 0 down): routers then
# use only live paths, and demand the failure disconnects is not routed. Registered lazily by name
# so optional parts (ONNX model) load only if asked.
RouterFn = Callable[["object"], RouterOutcome]
ROUTERS: dict[str, Callable] = {}


def router(name: str):
    def deco(factory):
        ROUTERS[name] = factory
        return factory
    return deco


@router("ecmp")
def _ecmp(topo, paths, args):
    from tecore import ecmp_link_loads, mlu

    from tecore.failures import surviving_topology

    def run(tm, link_up=None):
        t0 = time.perf_counter()
        net = topo if link_up is None else surviving_topology(topo, link_up)[0]
        loads = ecmp_link_loads(net, tm)  # unreachable destinations carry nothing
        return RouterOutcome(mlu(net, loads), time.perf_counter() - t0)
    return run


@router("lp")
def _lp(topo, paths, args):
    from tellm.controller.failure import restrict_paths
    from tecore import solve_min_mlu

    def run(tm, link_up=None):
        live, d = paths, tm.pair_demands(paths.pairs)
        if link_up is not None:
            live = restrict_paths(paths, link_up).paths
            d = np.where(_has_live_path(paths, link_up), d, 0.0)
        r = solve_min_mlu(topo, live, d, time_limit_seconds=args.lp_time_limit)
        return RouterOutcome(r.mlu, r.solve_seconds)
    return run


def _has_live_path(paths, link_up) -> np.ndarray:
    from tellm.controller.failure import path_alive

    return np.add.reduceat(path_alive(paths, link_up).astype(np.int64), paths.pair_ptr[:-1]) > 0


def _masked_mlu(topo, paths, split, tm, link_up) -> float:
    """MLU of ``split`` with the controller's failure handling: dead paths dropped, the rest of each
    pair renormalised, pairs with no live path not routed."""
    from tellm.controller.failure import mask_split
    from tecore import split_mlu

    d = tm.pair_demands(paths.pairs)
    if link_up is None:
        return split_mlu(topo, paths, split, d)
    masked = mask_split(paths, split, link_up)
    d = d.copy()
    d[masked.stranded_pairs] = 0.0
    return split_mlu(topo, paths, masked.split, d)


@router("opt")
def _opt(topo, paths, args):
    """The exact min-MLU over all paths (multicommodity-flow LP): what no path set can beat."""
    from tecore.failures import routable_tm, surviving_topology
    from tecore.optimum import solve_optimum

    def run(tm, link_up=None):
        net = topo
        if link_up is not None:
            net, tm = surviving_topology(topo, link_up)[0], routable_tm(topo, tm, link_up)
        r = solve_optimum(net, tm, solver="simplex", time_limit_seconds=args.lp_time_limit)
        return RouterOutcome(r.mlu, r.solve_seconds)
    return run


@router("shortest")
def _shortest(topo, paths, args):
    from tecore import shortest_path_split

    def run(tm, link_up=None):
        t0 = time.perf_counter()
        metric = None if link_up is None else topo.weight + 1e9 * (np.asarray(link_up) <= 0.5)
        m = _masked_mlu(topo, paths, shortest_path_split(topo, paths, metric), tm, link_up)
        return RouterOutcome(m, time.perf_counter() - t0)
    return run


#: --model-providers lists the loader understands, as ONNX Runtime provider names.
_PROVIDER_LISTS = {("CPUExecutionProvider",): "cpu", ("CUDAExecutionProvider",): "cuda",
                   ("CUDAExecutionProvider", "CPUExecutionProvider"): "auto"}


def _provider_choice(text: str) -> str:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if names not in _PROVIDER_LISTS:
        raise CLIError(f"--model-providers {text!r}: use one of "
                       + "; ".join(",".join(k) for k in _PROVIDER_LISTS))
    return _PROVIDER_LISTS[names]


@router("model")
def _model(topo, paths, args):
    """The TE head through ONNX Runtime (CPU unless --model-providers says otherwise)."""
    from tecore import check_split, split_mlu
    from tellm.contract.onnx_io import onnx_inputs
    from tellm.inference.artifacts import DEFAULT_MODEL_PATH
    from tellm.inference.session import ModelError, load_model

    try:
        head = load_model(args.model or DEFAULT_MODEL_PATH, provider=_provider_choice(args.model_providers),
                          threads=args.model_threads)
    except ModelError as exc:
        raise CLIError(str(exc)) from None
    static = onnx_inputs(topo, paths, np.zeros(paths.num_pairs))

    def run(tm, link_up=None):
        d = tm.pair_demands(paths.pairs)
        inputs = dict(static, demand_bps=d.astype(np.float32))
        if link_up is not None:
            inputs["link_up"] = np.asarray(link_up, dtype=inputs["link_up"].dtype)
        t0 = time.perf_counter()
        out = head.route(inputs)
        seconds = time.perf_counter() - t0
        check_split(paths, out.split.astype(np.float64), atol=1e-4)
        # Score the split on the exact float64 demands, as every other router is scored.
        return RouterOutcome(_masked_mlu(topo, paths, out.split.astype(np.float64), tm, link_up), seconds)
    return run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="compare routers' MLU on a topology and a set of traffic matrices",
        description="Route each traffic matrix with every --router and print MLU and solve time per "
                    "TM. ecmp = hop-by-hop equal-cost multipath (the shortest-path baseline); lp = the "
                    "optimum over the candidate paths (HiGHS); shortest = equal split over least-cost "
                    "candidate paths; opt = the exact optimum over all paths (multicommodity-flow LP, HiGHS), "
                    "reported as mlu_opt with every other router's MLU as a ratio to it "
                    "(mlu_<router>_over_opt).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_topology_args(p)
    common.add_tm_args(p)
    common.add_path_args(p)
    p.add_argument("--router", action="append", default=None, metavar="NAME",
                   help=f"router(s) to run, repeatable or comma-separated; known: {', '.join(ROUTERS)} "
                        "(default: ecmp,lp,opt)")
    p.add_argument("--lp-time-limit", type=float, default=None, metavar="SECONDS",
                   help="give up on an LP after this long")
    p.add_argument("--fail-links", default=None, metavar="all-single|A-B[+C-D],...",
                   help="route every TM under link failures instead: all-single = each link whose loss keeps "
                        "the network connected, one at a time; or a comma-separated list of scenarios, "
                        "each a link A-B or several failed together (A-B+C-D). Per failure: pairs left "
                        "without a candidate path (stranded), each router's MLU on the surviving network "
                        "and the exact optimum there")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write rows as JSON")
    p.add_argument("--model", type=Path, default=None,
                   help="ONNX TE head for --router model (default: the shipped inference/models/tellm-te.onnx)")
    p.add_argument("--model-providers", default="CPUExecutionProvider",
                   help="ONNX Runtime providers for --router model, comma-separated: CPUExecutionProvider, "
                        "CUDAExecutionProvider, or CUDAExecutionProvider,CPUExecutionProvider (CUDA, else CPU)")
    p.add_argument("--model-threads", type=int, default=0, metavar="N",
                   help="ONNX Runtime intra-op threads for --router model (0: onnxruntime's default)")
    p.set_defaults(func=run)


def _routers(args) -> list[str]:
    names = []
    for item in args.router or ["ecmp,lp,opt"]:
        names += [x.strip() for x in item.split(",") if x.strip()]
    unknown = [n for n in names if n not in ROUTERS]
    if unknown:
        raise CLIError(f"unknown router {unknown[0]!r}; known: {', '.join(ROUTERS)}")
    return list(dict.fromkeys(names))


def geomean(xs) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return float(math.exp(sum(map(math.log, xs)) / len(xs))) if xs else float("nan")


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    names = _routers(args)
    console = Console(stderr=args.json is not None and str(args.json) == "-")
    topo = common.load_topology_from_args(args)
    paths = common.paths_from_args(args, topo, console)
    tms = common.tms_from_args(args, topo)
    fns = {n: ROUTERS[n](topo, paths, args) for n in names}
    if args.fail_links:
        from .evalfail import run_failures

        return run_failures(args, topo, paths, tms, names, fns, console)
    rows = []
    for tm in common.progress(tms, "routing", console):
        row = {"tm": tm.label, "total_demand_bps": tm.total_bps}
        for n, fn in fns.items():
            out = fn(tm)
            if not math.isfinite(out.mlu):
                raise CLIError(f"router {n} returned a non-finite MLU on {tm.label}")
            row[f"mlu_{n}"] = out.mlu
            row[f"{n}_seconds"] = out.seconds
        if "opt" in fns:
            for n in fns:
                if n != "opt":
                    row[f"mlu_{n}_over_opt"] = row[f"mlu_{n}"] / row["mlu_opt"] if row["mlu_opt"] > 0 else None
        rows.append(row)

    table = Table(title=f"{topo.name}: {topo.num_nodes} nodes, {topo.num_links} links, "
                        f"{paths.num_pairs} pairs, {paths.num_paths} paths ({paths.strategy}, k={paths.k})")
    table.add_column("TM")
    for n in names:
        table.add_column(f"mlu_{n}", justify="right")
        table.add_column(f"{n} s", justify="right")
    if "lp" in names:
        for n in names:
            if n not in ("lp", "opt"):
                table.add_column(f"{n}/lp", justify="right")
    if "opt" in names:
        for n in names:
            if n != "opt":
                table.add_column(f"{n}/opt", justify="right")
    for row in rows:
        cells = [row["tm"]]
        for n in names:
            cells += [f"{row[f'mlu_{n}']:.4f}", f"{row[f'{n}_seconds']:.4f}"]
        if "lp" in names:
            cells += [f"{row[f'mlu_{n}'] / row['mlu_lp']:.4f}" if row["mlu_lp"] > 0 else "-"
                      for n in names if n not in ("lp", "opt")]
        if "opt" in names:
            cells += [f"{row[f'mlu_{n}_over_opt']:.4f}" if row["mlu_opt"] > 0 else "-"
                      for n in names if n != "opt"]
        table.add_row(*cells)
    summary = {}
    if "lp" in names:
        for n in names:
            if n not in ("lp", "opt"):
                ratios = [r[f"mlu_{n}"] / r["mlu_lp"] for r in rows if r["mlu_lp"] > 0]
                summary[f"{n}_over_lp_geomean"] = geomean(ratios)
                summary[f"{n}_over_lp_p90"] = float(np.percentile(ratios, 90)) if ratios else float("nan")
    if "opt" in names:
        for n in names:
            if n != "opt":
                ratios = [r[f"mlu_{n}_over_opt"] for r in rows if r["mlu_opt"] > 0]
                summary[f"{n}_over_opt_geomean"] = geomean(ratios)
                summary[f"{n}_over_opt_worst"] = float(max(ratios)) if ratios else float("nan")
    console.print(table)
    for key, val in summary.items():
        console.print(f"{key}: {val:.4f}")
    if args.json:
        doc = {"topology": topo.name, "topology_hash": topo.content_hash, "nodes": topo.num_nodes,
               "links": topo.num_links, "pairs": paths.num_pairs, "paths": paths.num_paths,
               "path_strategy": paths.strategy, "k": paths.k, "tm_source": args.tm, "routers": names,
               "rows": rows, "summary": summary, "topology_notes": list(topo.notes)}
        common.write_json(args.json, doc)
    return 0



