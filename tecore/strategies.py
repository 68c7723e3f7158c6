"""Per-pair path strategies: which loop-free paths a pair is offered, in order of preference.

A strategy yields candidate node lists for (graph, src, dst, k, weight attribute or None); the pool
(``tecore.pathpool``) keeps the first k distinct ones that pass the stretch bound. The whole-topology
optimum-seeded strategy lives in ``tecore.seeded``.
"""

from __future__ import annotations

from typing import Callable, Iterator, Literal

import networkx as nx
import numpy as np

from .pathset import PathError
from .topology import Topology

Metric = Literal["weight", "hop", "latency"]
Strategy = Callable[[nx.DiGraph, int, int, int, "str | None"], Iterator[list[int]]]


def _k_shortest(g: nx.DiGraph, s: int, t: int, k: int, weight: str | None) -> Iterator[list[int]]:
    """Yen's loop-free paths (networkx) in order of increasing cost, generated lazily."""
    try:
        yield from nx.shortest_simple_paths(g, s, t, weight=weight)
    except nx.NetworkXNoPath:
        return


def _capacity_shortest(g: nx.DiGraph, s: int, t: int, k: int, weight: str | None) -> Iterator[list[int]]:
    """Yen's paths under inverse-capacity weights (OSPF's reference-bandwidth rule): fat links first."""
    yield from _k_shortest(g, s, t, k, "invcap")


def _edge_disjoint_first(g: nx.DiGraph, s: int, t: int, k: int, weight: str | None) -> Iterator[list[int]]:
    """Greedy edge-disjoint shortest paths first (diversity), then Yen's shortest paths."""
    # A view hiding the used edges instead of a copy per pair (copying Kdl's graph for each of its
    # 284k pairs took minutes). The view is over one shared copy because a copy's predecessor order,
    # and so BFS's choice among equally short paths, differs from the original graph's: this keeps
    # the paths identical to the copy-per-pair version.
    base = g.graph.get("_disjoint_base")
    if base is None:
        base = g.copy()
        g.graph["_disjoint_base"] = base
    removed: list[tuple[int, int]] = []
    for _ in range(k):
        h = nx.restricted_view(base, (), removed) if removed else base
        try:
            p = nx.shortest_path(h, s, t, weight=weight)
        except nx.NetworkXNoPath:
            break
        yield p
        removed.extend(zip(p[:-1], p[1:]))
    yield from _k_shortest(g, s, t, k, weight)


def _whole_topology_marker(g, s, t, k, weight):  # pragma: no cover - dispatched in compute_paths
    raise PathError("this strategy builds the paths of all pairs at once in compute_paths")


STRATEGIES: dict[str, Strategy] = {
    "shortest": _k_shortest,
    "capacity": _capacity_shortest,
    "edge-disjoint": _edge_disjoint_first,
    # Whole-topology strategies, vectorised over all pairs (tecore.diverse, tecore.seeded):
    # shortest, then least-overlap paths (single-failure coverage), then Yen's where those repeat;
    "diverse": _whole_topology_marker,
    # paths that carry flow in exact min-MLU solutions of sample TMs, topped up with diverse paths.
    "optimum-seeded": _whole_topology_marker,
}
#: Strategy that runs per pair (networkx, bounded by max_stretch) where a whole-topology one cannot
#: honour a stretch bound.
BOUNDED_TOPUP_STRATEGY = "edge-disjoint"

DEFAULT_STRATEGY = "optimum-seeded"
DEFAULT_K = 4
DEFAULT_MAX_STRETCH: float | None = None


def metric_graph(topo: Topology, metric: Metric) -> tuple[nx.DiGraph, str | None]:
    """The topology as a networkx graph for search, and the weight attribute (None: unit weights)."""
    g = nx.DiGraph()
    g.add_nodes_from(range(topo.num_nodes))
    invcap = (float(topo.capacity_bps.max()) / topo.capacity_bps).tolist()
    edges = list(zip(topo.src.tolist(), topo.dst.tolist()))
    if metric == "hop" or (metric == "weight" and np.all(topo.weight == 1.0)):
        # unit weights: BFS is exact and several times faster than Dijkstra
        g.add_edges_from((u, v, {"invcap": c}) for (u, v), c in zip(edges, invcap))
        return g, None
    w = topo.weight if metric == "weight" else topo.latency_seconds
    g.add_edges_from((u, v, {"weight": x, "invcap": c}) for (u, v), x, c in zip(edges, w.tolist(), invcap))
    return g, "weight"


def metric_values(topo: Topology, metric: Metric) -> np.ndarray:
    return {"hop": np.ones(topo.num_links), "weight": topo.weight, "latency": topo.latency_seconds}[metric]


def mirrorable_values(topo: Topology, values: np.ndarray) -> bool:
    """True when every link has a reverse link with the same value (so reversed paths are as short)."""
    li = topo.link_index
    for i, (u, v) in enumerate(zip(topo.src.tolist(), topo.dst.tolist())):
        j = li.get((v, u))
        if j is None or values[j] != values[i]:
            return False
    return True
