"""Path length against the shortest possible: all-pairs distances and per-path stretch, in hops or latency."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

from .pathset import PathError, PathSet
from .topology import Topology


def stretch_metric_values(topo: Topology, stretch_metric: str) -> np.ndarray:
    """Per-link value of a stretch metric: 1 per hop, or the link's latency in seconds."""
    if stretch_metric == "hop":
        return np.ones(topo.num_links)
    if stretch_metric == "latency":
        return topo.latency_seconds
    raise PathError(f"stretch metric must be 'hop' or 'latency', not {stretch_metric!r}")


def shortest_distances(topo: Topology, stretch_metric: str = "hop") -> np.ndarray:
    """All-pairs shortest distance [N, N] in hops or seconds of latency (inf where unreachable)."""
    m = stretch_metric_values(topo, stretch_metric)
    g = sp.csr_matrix((m, (topo.src, topo.dst)), shape=(topo.num_nodes, topo.num_nodes))
    return shortest_path(g, method="D", directed=True, unweighted=stretch_metric == "hop")


def path_stretch(topo: Topology, paths: PathSet, stretch_metric: str = "hop") -> np.ndarray:
    """Each path's cost over its pair's shortest-path cost (1.0 = a shortest path): float64 [Np]."""
    cost = paths.path_cost(stretch_metric_values(topo, stretch_metric))
    best = shortest_distances(topo, stretch_metric)[paths.pairs[:, 0], paths.pairs[:, 1]]
    return cost / best[paths.path_pair]


def link_metric_matrix(topo: Topology, stretch_metric: str) -> np.ndarray:
    """Dense [N, N] matrix of the stretch metric per link (0 where there is no link)."""
    lm = np.zeros((topo.num_nodes, topo.num_nodes))
    lm[topo.src, topo.dst] = stretch_metric_values(topo, stretch_metric)
    return lm


def stretch_limit(max_stretch: float, shortest: float) -> float:
    """Largest path cost allowed by a stretch bound, with a little room for rounding."""
    return max_stretch * shortest * (1 + 1e-9) + 1e-12
