"""``tellm paths``: build (and cache) the candidate path set of a topology."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paths", help="build and cache candidate paths for a topology",
                       description="Compute k loop-free candidate paths per ordered node pair, cache them "
                                   "on disk (keyed by topology hash) and print a summary.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_topology_args(p)
    common.add_path_args(p)
    p.add_argument("--no-cache", action="store_true", help="recompute even when a cached set exists")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="write the path set as JSON: {\"src->dst\": [[node, ...], ...]}")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from tecore import compute_paths

    topo = common.load_topology_from_args(args)
    t0 = time.perf_counter()
    ps = compute_paths(topo, k=args.k, strategy=args.paths_strategy, workers=args.workers,
                       use_cache=not args.no_cache, progress=True)
    seconds = time.perf_counter() - t0
    hops = ps.path_hops
    print(f"{topo.summary()}")
    for note in topo.notes:
        print(f"  note: {note}")
    print(f"{ps.num_pairs} pairs, {ps.num_paths} paths ({ps.strategy}, k={ps.k}); "
          f"{np.mean(ps.paths_per_pair):.2f} paths/pair, hops mean {hops.mean():.2f} max {hops.max()}; "
          f"{seconds:.1f} s")
    if args.out:
        common.write_json(args.out, {"topology": topo.name, "topology_hash": topo.content_hash,
                                     "strategy": ps.strategy, "k": ps.k, "paths": ps.to_node_lists(topo)})
    return 0
