#!/usr/bin/env python3
"""Single link failures: stranded pairs before/after coverage, and head / path LP / exact optimum on the
surviving network.

    nice -n 10 python benchmarks/bench_failures.py --topology Geant2012 --topology sndlib:germany50 \\
        --json benchmarks/results/failures.json
    python benchmarks/bench_failures.py --workers 15 --interleave --topology GtsCe --sample GtsCe=180 \\
        --topology Cogentco --sample Cogentco=211 --deadline-seconds 400 --resume \\
        --json benchmarks/results/failures.json

Per topology: the default path set's single-failure coverage (and, with --before NAME=FILE.npz, that of
an earlier path set of the same topology), then --tms gravity TMs (seed 0) scaled so ECMP reaches --load
on the intact network, routed by every --router (routers of `tellm eval`: ecmp, lp, model, opt) on the
intact network and on the surviving network of every non-bridge link failure (or the first
--max-failures in link order, or a seeded random --sample). Needs ../shared/data (or TELLM_DATA_DIR).

--workers N runs the (topology, failure, TM) items in a pool of N processes, each with one HiGHS and
one ONNX Runtime thread; failures run in --topology order (--interleave: round-robin over the topologies),
a sample in its random order. The JSON is rewritten after every finished item, so a run stopped at a
time limit keeps each one; --resume continues the file (same --tms, --load, --router), skipping the
(failure, TM) rows it holds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

INTACT = "(intact)"  # the item that routes the TMs with no failure
RATIOS = [("model", "lp"), ("model", "opt"), ("lp", "opt"), ("ecmp", "opt")]


@dataclass(frozen=True)
class Setup:
    """What every worker rebuilds on its own: topologies, paths (from the cache), TMs and routers."""
    topologies: tuple[str, ...]
    routers: tuple[str, ...]
    tms: int
    load: float
    model: str | None


def geomean(xs) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return float(math.exp(sum(map(math.log, xs)) / len(xs))) if xs else float("nan")


def load_any_version(file: str):
    """A PathSet file of any cache version (the layout has not changed; only what strategies compute)."""
    from tecore import PathSet

    with np.load(file, allow_pickle=False) as z:
        return PathSet(str(z["topology_hash"]), int(z["num_nodes"]), int(z["num_links"]), z["pairs"], z["pair_ptr"],
                       z["path_ptr"], z["path_links"], str(z["strategy"]), int(z["k"]))


def load(name: str):
    from tecore import load_topology

    return load_topology(name, capacity="auto" if name.startswith("sndlib:") else "uniform")


def choose_failures(names: Sequence[str], sample: int | None, seed: int, max_failures: int | None) -> list[str]:
    """All failures in link order, the first ``max_failures``, or ``sample`` of them drawn with ``seed``
    in the draw's order (a larger sample with the same seed extends a smaller one)."""
    if sample is not None:
        order = np.random.default_rng(seed).permutation(len(names))
        return [names[i] for i in order[:sample]]
    return list(names[:max_failures] if max_failures else names)


# ---- worker side -------------------------------------------------------------------------------------
_W: dict[str, Any] = {}


def _pin_highs_to_one_thread() -> None:
    """HiGHS sizes its process-wide scheduler at the first solve; make that a 1-thread solve."""
    import highspy

    from tecore.lp import new_highs

    h = new_highs()
    h.setOptionValue("threads", 1)
    h.addVar(0.0, highspy.kHighsInf)
    h.changeColCost(0, 1.0)
    h.run()


def init_worker(setup: Setup, model_threads: int) -> None:
    from tecore import compute_paths, generate, scale_to_mlu
    from tellm.commands.eval import ROUTERS

    _pin_highs_to_one_thread()
    args = SimpleNamespace(lp_time_limit=None, model=setup.model, model_providers="CPUExecutionProvider",
                           model_threads=model_threads)
    for name in setup.topologies:
        topo = load(name)
        paths = compute_paths(topo, workers=1)
        tms = [scale_to_mlu(topo, tm, setup.load) for tm in generate(topo, "gravity", setup.tms, seed=0)]
        _W[name] = (topo, paths, tms, {r: ROUTERS[r](topo, paths, args) for r in setup.routers})


def solve_item(topology: str, failure: str, tm_index: int) -> tuple[str, str, list[dict]]:
    """The row of one failure (or of the intact network for ``INTACT``) and one TM."""
    from tecore.failures import parse_failures, routable_tm, stranded_pairs

    topo, paths, tms, fns = _W[topology]
    up = None if failure == INTACT else parse_failures(topo, failure)[0].link_up(topo)
    stranded = 0 if up is None else int(stranded_pairs(topo, paths, up).size)
    rows = []
    for i, tm in enumerate(tms[tm_index:tm_index + 1], start=tm_index):
        row: dict[str, Any] = {"failure": failure, "tm": tm.label, "tm_index": i, "stranded_pairs": stranded}
        for r, fn in fns.items():
            res = fn(tm if up is None else routable_tm(topo, tm, up), up)
            row[f"mlu_{r}"], row[f"{r}_seconds"] = res.mlu, res.seconds
        rows.append(row)
    return topology, failure, rows


# ---- driver side -------------------------------------------------------------------------------------
def summarise(rows: list[dict], intact_rows: list[dict]) -> dict:
    out: dict[str, float] = {}
    for a, b in RATIOS:
        if rows and f"mlu_{a}" in rows[0] and f"mlu_{b}" in rows[0]:
            ratios = [r[f"mlu_{a}"] / r[f"mlu_{b}"] for r in rows if r[f"mlu_{b}"] > 0]
            out[f"{a}_over_{b}_geomean"] = geomean(ratios)
            out[f"{a}_over_{b}_worst"] = max(ratios, default=float("nan"))
        if intact_rows and f"mlu_{a}" in intact_rows[0] and f"mlu_{b}" in intact_rows[0]:
            out[f"{a}_over_{b}_intact_geomean"] = geomean(
                [r[f"mlu_{a}"] / r[f"mlu_{b}"] for r in intact_rows if r[f"mlu_{b}"] > 0])
    return out


def plan_topology(name: str, args: argparse.Namespace, before: str | None,
                  old: dict | None) -> tuple[dict, list[list[tuple[str, str, int]]]]:
    """The topology's result entry (``old`` continued, if given) and the items still to run, by failure."""
    from tecore import compute_paths
    from tecore.coverage import coverage
    from tecore.failures import non_bridge_failures

    topo = load(name)
    t0 = time.perf_counter()
    paths = compute_paths(topo, workers=1)  # builds the cache file the workers then read
    failures = [f.name for f in non_bridge_failures(topo)]
    sample = args.sample.get(name)
    if old is None:
        out = {"topology": name, "nodes": topo.num_nodes, "links": topo.num_links, "strategy": paths.strategy,
               "k": paths.k, "paths_seconds": time.perf_counter() - t0,
               "coverage_after": coverage(topo, paths).as_dict(topo),
               "non_bridge_failures": len(failures), "sample": sample, "sample_seed": args.sample_seed,
               "failures_run": 0, "rows": [], "intact_rows": [], "summary": {}}
        if before:
            out["coverage_before"] = coverage(topo, load_any_version(before)).as_dict(topo)
    else:
        out = old
        out.setdefault("intact_rows", [])
        if out.get("sample") is not None and sample is not None and out.get("sample_seed") != args.sample_seed:
            raise SystemExit(f"--resume: {name} was sampled with seed {out.get('sample_seed')}, not {args.sample_seed}")
        out["sample"] = sample
    done = {(r["failure"], r.get("tm_index")) for r in out["rows"] + out["intact_rows"]}
    todo = [INTACT] + choose_failures(failures, sample, args.sample_seed, args.max_failures)
    blocks = [[(name, f, i) for i in range(args.tms) if (f, i) not in done] for f in todo]
    return out, [b for b in blocks if b]


def interleave(lists: list[list]) -> list:
    """Round-robin over ``lists``: a0 b0 c0 a1 b1 ..."""
    return [x[i] for i in range(max(map(len, lists), default=0)) for x in lists if i < len(x)]


def merge(entry: dict, failure: str, rows: list[dict]) -> None:
    """Add one finished item to its topology's entry and refresh the summary."""
    entry["intact_rows" if failure == INTACT else "rows"].extend(rows)
    entry["failures_run"] = len({r["failure"] for r in entry["rows"]})
    entry["summary"] = summarise(entry["rows"], entry["intact_rows"])


def write_json(doc: dict, path: Path) -> None:
    doc["load_average_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def machine() -> dict:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version()}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    before = dict(x.split("=", 1) for x in args.before)
    doc: dict[str, Any] = json.loads(args.json.read_text()) if args.resume and args.json.exists() else {"results": []}
    runs = doc.setdefault("runs", [])
    runs.append({"command": " ".join(["bench_failures.py"] + argv), "commit": args.commit or git_commit(),
                 "machine": machine(), "workers": args.workers, "load_average_start": os.getloadavg()})
    entries = {e["topology"]: e for e in doc["results"]}
    per_topology: list[list[list[tuple[str, str, int]]]] = []
    for name in args.topology:
        entry, todo = plan_topology(name, args, before.get(name), entries.get(name))
        if name not in entries:
            doc["results"].append(entry)
            entries[name] = entry
        per_topology.append(todo)
    blocks = interleave(per_topology) if args.interleave else [b for t in per_topology for b in t]
    items = [item for block in blocks for item in block]
    setup = Setup(tuple(args.topology), tuple(args.router.split(",")), args.tms, args.load,
                  str(args.model) if args.model else None)
    t_end = time.monotonic() + args.deadline_seconds if args.deadline_seconds else math.inf

    def finish(topology: str, failure: str, rows: list[dict]) -> None:
        merge(entries[topology], failure, rows)
        runs[-1]["items_done"] = runs[-1].get("items_done", 0) + 1
        runs[-1]["wall_seconds"] = time.monotonic() - t_start
        write_json(doc, args.json)
        mlus = " ".join(f"{k[4:]} {v:.4f}" for k, v in rows[-1].items() if k.startswith("mlu_"))
        print(f"{topology} {failure} {rows[0]['tm']}: stranded {rows[0]['stranded_pairs']} {mlus}",
              file=sys.stderr, flush=True)

    t_start = time.monotonic()
    write_json(doc, args.json)
    if args.workers <= 1:
        init_worker(setup, args.model_threads or 0)
        for item in items:
            if time.monotonic() > t_end:
                break
            finish(*solve_item(*item))
        return doc
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # numpy in the workers: one thread each
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=init_worker,
                             initargs=(setup, args.model_threads if args.model_threads is not None else 1)) as pool:
        pending: set[Future] = {pool.submit(solve_item, *item) for item in items}
        while pending:
            timeout = None if t_end == math.inf else max(t_end - time.monotonic(), 0.0)
            finished, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            for fut in finished:
                finish(*fut.result())
            if time.monotonic() >= t_end:
                pending = {f for f in pending if not f.cancel()}  # those already running still finish
                t_end = math.inf
    return doc


def markdown(doc: dict) -> str:
    """The README table: per topology, coverage before/after and the routers' ratios over all rows."""
    head = ["topology", "non-bridge failures (run x TMs)", "stranded pairs before: failures / total / worst",
            "stranded after", "head / LP geo (worst)", "LP / opt geo (worst)", "head / opt geo (worst)",
            "head / LP, intact network"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["results"]:
        b = r.get("coverage_before")
        before = "-" if b is None else (f"{len(b['stranding_failures'])} / {b['stranded_pairs_total']} / "
                                        f"{max(b['stranding_failures'].values(), default=0)}")
        after = max((x["stranded_pairs"] for x in r["rows"]), default=0)
        sm = r["summary"]
        tms = len({x["tm"] for x in r["rows"]})
        run = f"{r['failures_run']} x {tms}" if len(r["rows"]) == r["failures_run"] * tms else \
            f"{r['failures_run']}, {len(r['rows'])} (failure, TM) rows"
        run = run if r.get("sample") is None else f"sampled {run}"

        def cell(a, b):
            if f"{a}_over_{b}_geomean" not in sm:
                return "-"
            return f"{sm[f'{a}_over_{b}_geomean']:.4f} ({sm[f'{a}_over_{b}_worst']:.4f})"

        intact = sm.get("model_over_lp_intact_geomean")
        lines.append(f"| {r['topology']} | {r['non_bridge_failures']} ({run}) | {before} | {after} | "
                     f"{cell('model', 'lp')} | {cell('lp', 'opt')} | {cell('model', 'opt')} | "
                     f"{'-' if intact is None else f'{intact:.4f}'} |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", action="append", default=[])
    ap.add_argument("--router", default="ecmp,lp,model,opt")
    ap.add_argument("--model", type=Path, default=None,
                    help="ONNX head for the model router (default: the shipped one)")
    ap.add_argument("--tms", type=int, default=3, help="gravity TMs per failure (seed 0)")
    ap.add_argument("--load", type=float, default=0.8, help="ECMP MLU of each TM on the intact network")
    ap.add_argument("--max-failures", type=int, default=None, help="only the first N non-bridge failures")
    ap.add_argument("--sample", action="append", default=[], metavar="NAME=N",
                    help="run a random sample of N of topology NAME's non-bridge failures (seeded by --sample-seed)")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--interleave", action="store_true", help="take failures round-robin over the topologies")
    ap.add_argument("--workers", type=int, default=1, help="processes; each gets one HiGHS and one ONNX Runtime thread")
    ap.add_argument("--model-threads", type=int, default=None,
                    help="ONNX Runtime intra-op threads per process (default: 1 with --workers > 1, else ORT's own)")
    ap.add_argument("--deadline-seconds", type=float, default=None,
                    help="start no failure after this long (the ones running finish)")
    ap.add_argument("--resume", action="store_true", help="continue --json: keep its rows, skip failures it holds")
    ap.add_argument("--commit", default=None, help="commit to record (default: git rev-parse of this checkout)")
    ap.add_argument("--before", action="append", default=[], metavar="NAME=FILE.npz",
                    help="an earlier path set of topology NAME whose coverage is reported as 'before'")
    ap.add_argument("--table", type=Path, default=None, metavar="JSON", help="print the README table of a run and exit")
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "failures.json")
    args = ap.parse_args(argv)
    try:
        args.sample = {k: int(v) for k, v in (x.split("=", 1) for x in args.sample)}
    except ValueError:
        ap.error("--sample takes NAME=N, e.g. --sample Cogentco=30")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return 0
    run(args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
