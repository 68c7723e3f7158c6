#!/usr/bin/env python3
"""Build time of the default path set, stage by stage (wall and CPU seconds), on this machine.

    nice -n 10 python benchmarks/bench_paths_build.py --topology Cogentco --topology Kdl \\
        --json benchmarks/results/paths_build.json

Stages: the diverse paths of every pair (``tecore.diverse.all_pair_paths``, coverage gaps closed), the
seeding optima (``tecore.seeded.seed_shares``: 6 sample TMs, each min-MLU then shorten, and their flow
decomposition; skipped above ``SEED_MAX_LP_COLUMNS``), the per-pair composition and the coverage
check. CPU seconds are the process's and its workers' (HiGHS threads included); wall seconds depend on the machine's
load, recorded at the start and end of each topology. Topology Zoo graphs get uniform 10 Gbit/s links.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Stage:
    def __init__(self, out: dict, name: str):
        self.out, self.name = out, name

    def __enter__(self):
        self.w, self.c = time.perf_counter(), cpu_seconds()

    def __exit__(self, *exc):
        self.out[self.name] = {"wall_seconds": time.perf_counter() - self.w, "cpu_seconds": cpu_seconds() - self.c}
        print(f"  {self.name}: {self.out[self.name]['wall_seconds']:.1f} s wall, "
              f"{self.out[self.name]['cpu_seconds']:.1f} s CPU", file=sys.stderr, flush=True)


def run_topology(name: str, workers: int) -> dict:
    import numpy as np

    from tecore import PathSet, load_topology
    from tecore.coverage import coverage
    from tecore.diverse import all_pair_paths
    from tecore import seeded

    topo = load_topology(name, capacity="auto" if name.startswith("sndlib:") else "uniform")
    out = {"topology": name, "nodes": topo.num_nodes, "links": topo.num_links, "load_average_start": os.getloadavg()[0],
           "workers": workers}
    st: dict = {}
    print(name, file=sys.stderr, flush=True)
    with Stage(st, "diverse_paths"):
        pairs, base = all_pair_paths(topo, 4, None if np.all(topo.weight == 1.0) else topo.weight, workers)
    flat, strategy = base, "diverse"
    if seeded.seeding_fits(topo):
        strategy = "optimum-seeded"
        with Stage(st, "seeding_optima"):
            share = seeded.seed_shares(topo, 0, workers=workers)
        with Stage(st, "compose"):
            flat = seeded.keep_coverage(topo, pairs, seeded.compose(topo, 4, pairs, base, share), base)
    counts = np.bincount(flat.pair, minlength=pairs.shape[0])
    ps = PathSet(topo.content_hash, topo.num_nodes, topo.num_links, pairs[counts > 0],
                 np.concatenate([[0], np.cumsum(counts[counts > 0])]), flat.ptr, flat.links, strategy, 4)
    with Stage(st, "coverage_check"):
        cov = coverage(topo, ps)
    out.update(strategy=strategy, pairs=ps.num_pairs, paths=ps.num_paths, stages=st,
               total_wall_seconds=sum(v["wall_seconds"] for k, v in st.items() if k != "coverage_check"),
               total_cpu_seconds=sum(v["cpu_seconds"] for k, v in st.items() if k != "coverage_check"),
               coverage=cov.as_dict(topo), load_average_end=os.getloadavg()[0])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", action="append", required=True)
    ap.add_argument("--workers", type=int, default=2, help="processes (compute_paths' default: all cores)")
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "paths_build.json")
    args = ap.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
           "commit": commit, "cpu_count": os.cpu_count(), "results": []}
    for name in args.topology:
        doc["results"].append(run_topology(name, args.workers))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
