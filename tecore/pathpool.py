"""The worker pool that runs a per-pair strategy over many pairs (forked processes share the graph).

With a symmetric topology only src < dst is searched and the reverse paths are mirrored, which halves
the work. Each task carries only node ids; the graph and options are inherited through fork.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable

import numpy as np

from .strategies import STRATEGIES, Metric, metric_graph, metric_values, mirrorable_values
from .stretch import link_metric_matrix, shortest_distances, stretch_limit
from .topology import Topology

NodePaths = dict[tuple[int, int], list[list[int]]]

# Worker state, inherited through fork so that each task carries only node ids.
_WORKER: dict = {}


def _work(task: tuple[int, list[int]]) -> list[tuple[int, int, list[list[int]]]]:
    s, targets = task
    w = _WORKER
    return [(s, t, _pick(w["fn"](w["g"], s, t, w["k"], w["weight"]), s, t)) for t in targets]


def _pick(candidates: Iterable[list[int]], s: int, t: int) -> list[list[int]]:
    """The first k distinct candidates within the stretch bound (examining at most 4k + 8)."""
    w = _WORKER
    k, bound, lm, dist, monotone = w["k"], w["bound"], w["link_metric"], w["dist"], w["monotone"]
    limit = stretch_limit(bound, dist[s, t]) if bound is not None else np.inf
    out: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for examined, p in enumerate(candidates):
        if len(out) == k or examined >= 4 * k + 8:
            break
        key = tuple(p)
        if key in seen:
            continue
        seen.add(key)
        if bound is not None and lm[p[:-1], p[1:]].sum() > limit:
            if monotone:
                break  # candidates come in order of this very cost: none later can pass
            continue
        out.append(p)
    return out


def search(topo: Topology, k: int, strategy: str, metric: Metric, workers: int | None, progress: bool,
           pairs, max_stretch: float | None, stretch_metric: str) -> NodePaths:
    """Run a per-pair ``strategy`` for every ordered pair (or ``pairs``) over ``workers`` processes."""
    g, weight = metric_graph(topo, metric)
    mirror = mirrorable_values(topo, metric_values(topo, metric)) and (
        strategy != "capacity" or mirrorable_values(topo, topo.capacity_bps))
    if pairs is None:
        n = topo.num_nodes
        targets = {s: [t for t in range(n) if (t > s if mirror else t != s)] for s in range(n)}
    else:
        mirror = False
        targets = {}
        for s, t in pairs:
            if s != t:
                targets.setdefault(int(s), []).append(int(t))
    tasks = [(s, ts) for s, ts in targets.items() if ts]
    search_is_stretch_metric = (strategy == "shortest" and (
        (stretch_metric == "hop" and (metric == "hop" or np.all(topo.weight == 1.0) and metric == "weight"))
        or (stretch_metric == "latency" and metric == "latency")))
    _WORKER.update(g=g, fn=STRATEGIES[strategy], k=k, weight=weight, bound=max_stretch,
                   link_metric=link_metric_matrix(topo, stretch_metric),
                   dist=shortest_distances(topo, stretch_metric) if max_stretch is not None else None,
                   monotone=search_is_stretch_metric)
    workers = workers or os.cpu_count() or 1
    found: NodePaths = {}
    results: Iterable = []
    if workers > 1 and len(tasks) > 8:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"))
        results = pool.map(_work, tasks, chunksize=max(1, len(tasks) // (workers * 16)))
    else:
        pool = None
        results = map(_work, tasks)
    try:
        results = with_progress(results, len(tasks), f"paths {topo.name} {strategy} k={k}", progress)
        for chunk in results:
            for s, t, plist in chunk:
                if plist:
                    found[(s, t)] = plist
                    if mirror:
                        found[(t, s)] = [p[::-1] for p in plist]
    finally:
        if pool is not None:
            pool.shutdown()
        _WORKER.clear()
    return found


def with_progress(it, total: int, label: str, enabled: bool):
    """Iterate ``it``, drawing a progress bar on the terminal when ``enabled``."""
    if not enabled:
        yield from it
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for x in it:
            yield x
            bar.advance(task)
