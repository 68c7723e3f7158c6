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
from .pathpool import search
from .pathset import PathError, PathSet
from .strategies import DEFAULT_K, DEFAULT_MAX_STRETCH, DEFAULT_STRATEGY, STRATEGIES, Metric
from .stretch import stretch_metric_values
from .topology import Topology

__all__ = ["cache_dir", "compute_paths"]


def cache_dir() -> Path:
    return Path(os.environ.get("TELLM_CACHE_DIR") or Path.home() / ".cache" / "tellm") / "paths"


def compute_paths(topo: Topology, k: int = DEFAULT_K, strategy: str = DEFAULT_STRATEGY,
                  metric: Metric = "weight", workers: int | None = None, use_cache: bool = True,
                  progress: bool = False, pairs: Iterable[tuple[int, int]] | None = None,
                  max_stretch: float | None = DEFAULT_MAX_STRETCH, stretch_metric: str = "hop",
                  seed: int = 0) -> PathSet:
    """Up to k loop-free paths for every ordered pair (or the given pairs).

    ``strategy``: "shortest" (Yen, the usual baseline), "capacity" (Yen on inverse-capacity weights),
    "edge-disjoint" (greedy edge-disjoint shortest paths first), or "optimum-seeded" (paths carrying
    flow in exact min-MLU solutions of sample TMs drawn with ``seed``, topped up with edge-disjoint-
    first paths). ``max_stretch`` bounds every path's cost at that multiple of the pair's shortest
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
        extra = "" if max_stretch is None else f"-x{max_stretch:g}{stretch_metric}"
        if strategy == "optimum-seeded":
            extra += f"-seed{seed}"
        cache_file = cache_dir() / f"{topo.name}-{topo.content_hash}-{strategy}-{metric}-k{k}{extra}.npz"
        if cache_file.exists():
            try:
                return PathSet.load(cache_file)
            except Exception:  # noqa: BLE001 - a bad cache file is recomputed, never fatal
                cache_file.unlink(missing_ok=True)
    if strategy == "optimum-seeded" and not seeded.seeding_fits(topo):
        warnings.warn(f"{topo.name}: the optimum-seeding LP would have {topo.num_nodes * topo.num_links} "
                      f"columns (limit {seeded.SEED_MAX_LP_COLUMNS}); using {seeded.SEED_TOPUP_STRATEGY} "
                      "paths only", stacklevel=2)
        strategy = seeded.SEED_TOPUP_STRATEGY
    if strategy == "optimum-seeded":
        found = seeded.optimum_seeded(topo, k, metric, workers, progress, max_stretch, stretch_metric, seed, pairs)
    else:
        found = search(topo, k, strategy, metric, workers, progress, pairs, max_stretch, stretch_metric)
    ps = PathSet.from_node_paths(topo, found, strategy=strategy, k=k)
    if cache_file is not None:
        ps.save(cache_file)
    return ps
