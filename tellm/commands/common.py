"""Arguments and helpers shared by subcommands (topology, traffic, paths, progress, JSON out)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from tellm.errors import CLIError


def add_topology_args(p: argparse.ArgumentParser, required: bool = True, topology_help: str = "",
                      capacity_help: str = "") -> None:
    """``topology_help``/``capacity_help`` are appended to the generic help (e.g. what happens without a file)."""
    g = p.add_argument_group("topology")
    g.add_argument("--topology", "-t", required=required, metavar="NAME|FILE",
                   help="a GraphML / SNDlib XML / YAML file, or a name in the data directory "
                        "(e.g. Abilene, geant, Kdl; zoo:NAME or sndlib:NAME when both exist)" + topology_help)
    g.add_argument("--capacity", choices=["auto", "uniform", "linkspeed"], default="auto",
                   help="capacity policy for files without capacities (see tecore.loaders)")
    g.add_argument("--default-capacity-bps", type=float, default=10e9, metavar="BPS",
                   help="capacity of links whose file gives none" + capacity_help)


def add_tm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("traffic")
    g.add_argument("--tm", default="gravity", metavar="SOURCE",
                   help="gravity | uniform | poisson | bimodal | hotspot (generated), sndlib (the real TMs "
                        "that belong to an SNDlib network), or a demand archive/XML file")
    g.add_argument("--count", type=int, default=5, help="number of TMs")
    g.add_argument("--seed", type=int, default=0, help="seed of the TM generator")
    g.add_argument("--load", type=float, default=0.8, metavar="MLU",
                   help="scale each TM so that ECMP routing reaches this MLU (0 = keep the "
                        "generator's scale or the file's real values)")


def add_path_args(p: argparse.ArgumentParser) -> None:
    from tecore.strategies import DEFAULT_K, DEFAULT_MAX_STRETCH, DEFAULT_STRATEGY, STRATEGIES

    g = p.add_argument_group("candidate paths")
    g.add_argument("--k", type=int, default=DEFAULT_K, help="paths per ordered pair (at most)")
    g.add_argument("--paths-strategy", default=DEFAULT_STRATEGY, choices=sorted(STRATEGIES),
                   help="how candidate paths are chosen: shortest (Yen), capacity (Yen on inverse-capacity "
                        "weights), edge-disjoint (disjoint shortest paths first), diverse (shortest, then "
                        "least-overlap paths: every pair survives any single link failure the network "
                        "survives), optimum-seeded (paths of exact min-MLU solutions of sample TMs, topped "
                        "up with diverse paths, keeping that single-failure coverage)")
    g.add_argument("--max-stretch", type=float, default=DEFAULT_MAX_STRETCH, metavar="X",
                   help="drop candidate paths longer than X times the pair's shortest path "
                        "(in --stretch-metric); default: no bound")
    g.add_argument("--stretch-metric", choices=["hop", "latency"], default="hop",
                   help="what --max-stretch measures")
    g.add_argument("--paths-seed", type=int, default=0,
                   help="seed of the sample TMs the optimum-seeded strategy is built from")
    g.add_argument("--workers", type=int, default=None, help="processes for path search (default: all cores)")


def load_topology_from_args(args):
    from tecore import load_topology

    if args.default_capacity_bps <= 0 or not math.isfinite(args.default_capacity_bps):
        raise CLIError("--default-capacity-bps must be a positive number")
    return load_topology(args.topology, capacity=args.capacity, default_capacity_bps=args.default_capacity_bps)


def paths_from_args(args, topo, console=None, use_cache: bool = True):
    from tecore import compute_paths

    if not 1 <= args.k <= 64:
        raise CLIError("--k must be between 1 and 64")
    if args.max_stretch is not None and not args.max_stretch >= 1.0:
        raise CLIError("--max-stretch must be >= 1")
    return compute_paths(topo, k=args.k, strategy=args.paths_strategy, workers=args.workers,
                         progress=sys.stderr.isatty(), max_stretch=args.max_stretch, use_cache=use_cache,
                         stretch_metric=args.stretch_metric, seed=args.paths_seed)


def tms_from_args(args, topo):
    from tecore import generate, read_sndlib_demands, scale_to_mlu
    from tecore.traffic import GENERATORS, find_sndlib_demands

    if args.count < 1:
        raise CLIError("--count must be >= 1")
    if args.load < 0 or not math.isfinite(args.load):
        raise CLIError("--load must be >= 0")
    if args.tm in GENERATORS:
        tms = generate(topo, args.tm, args.count, seed=args.seed)
    else:
        source = find_sndlib_demands(topo.name) if args.tm == "sndlib" else Path(args.tm)
        if source is None:
            raise CLIError(f"no SNDlib demand archive in the data directory for {topo.name!r}")
        if not Path(source).exists():
            raise CLIError(f"--tm {args.tm!r}: not a TM family ({', '.join(GENERATORS)}, sndlib) nor a file")
        tms = list(read_sndlib_demands(source, topo, limit=args.count))
        if not tms:
            raise CLIError(f"{source}: no non-empty traffic matrices")
    if args.load > 0:
        tms = [scale_to_mlu(topo, tm, args.load) for tm in tms]
    return tms


def progress(items, label: str, console=None):
    """Iterate with a progress bar on a terminal; plain iteration otherwise (CI logs, pipes)."""
    items = list(items)
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=label, console=console, transient=True)


def write_json(path: Path, doc: dict) -> None:
    text = json.dumps(doc, indent=2, allow_nan=False)
    if str(path) == "-":
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
