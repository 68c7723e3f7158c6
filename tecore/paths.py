"""``compute_paths``: the candidate path set of a topology, built by a strategy and cached on disk.

Paths are computed once per (topology hash, strategy, k, metric, stretch bound, seed) and cached as
.npz files under ``cache_dir()``. Per-pair strategies live in ``tecore.strategies`` and run on the
worker pool of ``tecore.pathpool``; the optimum-seeded strategy lives in ``tecore.seeded``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from . import seeded
from .diverse import FlatPaths, all_pair_paths, diverse_paths
from .links import link_matrix
from .pathpool import search
from .pathset import PathError, PathSet
from .strategies import (BOUNDED_TOPUP_STRATEGY, DEFAULT_K, DEFAULT_MAX_STRETCH, DEFAULT_STRATEGY, STRATEGIES,
                         Metric, metric_values)
from .stretch import shortest_distances, stretch_limit, stretch_metric_values
from .topology import Topology

__all__ = ["cache_dir", "cached_paths", "compute_paths"]


def cache_dir() -> Path:
    return Path(os.environ.get("TELLM_CACHE_DIR") or Path.home() / ".cache" / "tellm") / "paths"


def _cache_file(topo: Topology, k: int, strategy: str, metric: str, max_stretch: float | None,
                stretch_metric: str, seed: int) -> Path:
    extra = "" if max_stretch is None else f"-x{max_stretch:g}{stretch_metric}"
    if strategy == "optimum-seeded":
        extra += f"-seed{seed}"
    return cache_dir() / f"{topo.name}-{topo.content_hash}-{strategy}-{metric}-k{k}{extra}.npz"


def _load_cached(file: Path) -> PathSet | None:
    if file.exists():
        try:
            return PathSet.load(file)
        except Exception:  # noqa: BLE001 - a bad cache file is recomputed, never fatal
            file.unlink(missing_ok=True)
    return None


def cached_paths(topo: Topology) -> PathSet | None:
    """The default path set of ``topo`` if the cache holds it (no computation)."""
    return _load_cached(_cache_file(topo, DEFAULT_K, DEFAULT_STRATEGY, "weight", DEFAULT_MAX_STRETCH, "hop", 0))


def compute_paths(topo: Topology, k: int = DEFAULT_K, strategy: str = DEFAULT_STRATEGY,
                  metric: Metric = "weight", workers: int | None = None, use_cache: bool = True,
                  progress: bool = False, pairs: Iterable[tuple[int, int]] | None = None,
                  max_stretch: float | None = DEFAULT_MAX_STRETCH, stretch_metric: str = "hop",
                  seed: int = 0) -> PathSet:
    """Up to k loop-free paths for every ordered pair (or the given pairs).

    ``strategy``: "shortest" (Yen, the usual baseline), "capacity" (Yen on inverse-capacity weights),
    "edge-disjoint" (greedy edge-disjoint shortest paths first, then Yen), "diverse" (shortest, then
    least-overlap paths: single-failure coverage; vectorised over all pairs), or "optimum-seeded"
    (paths carrying flow in exact min-MLU solutions of sample TMs drawn with ``seed``, topped up with
    diverse paths, keeping single-failure coverage). ``max_stretch`` bounds every path's cost at that multiple of the pair's shortest
    path in ``stretch_metric`` ("hop" or "latency"); pairs keep fewer than k paths when fewer fit.

    With a symmetric topology only src < dst is searched and the reverse paths are mirrored, which
    halves the work. ``workers`` processes (default: all cores) share the sources.
    """
    if strategy not in STRATEGIES:
        raise PathError(f"unknown path strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if not 1 <= k <= 64:
        raise PathError(f"k must be between 1 and 64, got {k}")
    if max_stretch is not None and not (max_stretch >= 1.0 and np.isfinite(max_stretch)):
        raise PathError(f"max_stretch must be a number >= 1 (or None), got {max_stretch}")
    stretch_metric_values(topo, stretch_metric)  # validates the name
    cache_file = None
    if use_cache and pairs is None:
        cache_file = _cache_file(topo, k, strategy, metric, max_stretch, stretch_metric, seed)
        found = _load_cached(cache_file)
        if found is not None:
            return found
    if strategy == "optimum-seeded" and not seeded.seeding_fits(topo):
        warnings.warn(f"{topo.name}: the optimum-seeding LP would have {topo.num_nodes * topo.num_links} "
                      f"columns (limit {seeded.SEED_MAX_LP_COLUMNS}); using {seeded.SEED_TOPUP_STRATEGY} "
                      "paths only", stacklevel=2)
        strategy = seeded.SEED_TOPUP_STRATEGY
    if strategy in ("diverse", "optimum-seeded"):
        ps = _whole_topology(topo, k, strategy, metric, workers, progress, pairs, max_stretch, stretch_metric, seed)
    else:
        found = search(topo, k, strategy, metric, workers, progress, pairs, max_stretch, stretch_metric)
        ps = PathSet.from_node_paths(topo, found, strategy=strategy, k=k)
    if cache_file is not None:
        ps.save(cache_file)
    return ps


def _whole_topology(topo: Topology, k: int, strategy: str, metric: Metric, workers: int | None, progress: bool,
                    pairs, max_stretch: float | None, stretch_metric: str, seed: int) -> PathSet:
    """The diverse or optimum-seeded path set. Under a stretch bound the per-pair top-up
    (``BOUNDED_TOPUP_STRATEGY``, which honours the bound) replaces the vectorised diverse paths."""
    weight = None if metric == "hop" or (metric == "weight" and np.all(topo.weight == 1.0)) else metric_values(topo, metric)
    workers = workers or os.cpu_count() or 1
    if pairs is None and max_stretch is None:
        pair_arr, base = all_pair_paths(topo, k, weight, workers)
    elif max_stretch is None:
        pair_arr = np.unique(np.array([(s, t) for s, t in pairs if s != t], dtype=np.int64).reshape(-1, 2), axis=0)
        base = diverse_paths(topo, k, weight, pair_arr)
    else:
        found = search(topo, k, BOUNDED_TOPUP_STRATEGY, metric, workers, progress, pairs, max_stretch, stretch_metric)
        pair_arr, base = _flat_from_node_paths(topo, found)
    if strategy == "optimum-seeded":
        bound = None
        if max_stretch is not None:
            best = shortest_distances(topo, stretch_metric)[pair_arr[:, 0], pair_arr[:, 1]]
            bound = stretch_limit(max_stretch, best)
        composed = seeded.compose(topo, k, pair_arr, base, seeded.seed_shares(topo, seed, progress, workers), bound,
                                  stretch_metric_values(topo, stretch_metric))
        base = seeded.keep_coverage(topo, pair_arr, composed, base)
    counts = np.bincount(base.pair, minlength=pair_arr.shape[0])
    has = counts > 0
    return PathSet(topology_hash=topo.content_hash, num_nodes=topo.num_nodes, num_links=topo.num_links,
                   pairs=pair_arr[has], pair_ptr=np.concatenate([[0], np.cumsum(counts[has])]),
                   path_ptr=base.ptr, path_links=base.links, strategy=strategy, k=k)


def _flat_from_node_paths(topo: Topology, found) -> tuple[np.ndarray, FlatPaths]:
    keys = sorted(found)
    lm = link_matrix(topo)
    pair, hops, links = [], [], []
    for i, key in enumerate(keys):
        for nodes in found[key]:
            pair.append(i)
            hops.append(len(nodes) - 1)
            links.append(lm[nodes[:-1], nodes[1:]])
    pairs = np.array(keys, dtype=np.int64).reshape(-1, 2)
    return pairs, FlatPaths(np.array(pair, np.int64), np.concatenate([[0], np.cumsum(hops)]).astype(np.int64),
                            np.concatenate(links) if links else np.zeros(0, np.int64))
