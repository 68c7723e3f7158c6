"""Failure scenarios: which links a failure takes down, the surviving network, and what is left to route.

A scenario fails one or more failure groups (a cable: a link and its reverse). ``parse_failures``
reads the operator's spelling: ``all-single`` (every link whose loss keeps the network connected, one
at a time) or a comma-separated list of scenarios, each ``A-B`` or several joined by ``+``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .links import link_groups
from .pathset import PathSet
from .topology import Topology, TopologyError
from .traffic import TrafficMatrix


@dataclass(frozen=True)
class Failure:
    name: str  # e.g. "Amsterdam-London" or "A-B+C-D"
    groups: tuple[int, ...]  # failure groups (lower link id of each cable)

    def link_up(self, topo: Topology) -> np.ndarray:
        """float64 [L]: 1 for links that survive, 0 for the failed ones (both directions of a cable)."""
        return (~np.isin(link_groups(topo), np.array(self.groups, dtype=np.int64))).astype(np.float64)


def _cable_name(topo: Topology, g: int) -> str:
    return f"{topo.nodes[topo.src[g]]}-{topo.nodes[topo.dst[g]]}"


def components(topo: Topology, up: np.ndarray) -> np.ndarray:
    """Node labels of the (strongly) connected components over the links ``up`` (bool [L])."""
    n = topo.num_nodes
    g = sp.csr_matrix((np.ones(int(up.sum())), (topo.src[up], topo.dst[up])), shape=(n, n))
    return connected_components(g, directed=True, connection="strong")[1]


def non_bridge_failures(topo: Topology) -> list[Failure]:
    """Every single cable whose loss leaves the network as connected as it was."""
    groups = np.unique(link_groups(topo))
    link_group = link_groups(topo)
    base = np.unique(components(topo, np.ones(topo.num_links, bool))).size
    return [Failure(_cable_name(topo, g), (g,)) for g in groups.tolist()
            if np.unique(components(topo, link_group != g)).size == base]


def parse_failures(topo: Topology, spec: str) -> list[Failure]:
    """``all-single`` or ``A-B[+C-D],...`` (node names; ``A->B`` is accepted for one direction's cable)."""
    if spec.strip() == "all-single":
        return non_bridge_failures(topo)
    groups = link_groups(topo)
    ix, li = topo.node_index, topo.link_index
    out = []
    for scenario in [x.strip() for x in spec.split(",") if x.strip()]:
        gs = []
        for cable in scenario.split("+"):
            a, sep, b = cable.replace("->", "-").partition("-")
            if not sep or a not in ix or b not in ix or (ix[a], ix[b]) not in li:
                raise TopologyError(f"failure {cable!r}: expected NODE-NODE naming a link of {topo.name}")
            gs.append(int(groups[li[(ix[a], ix[b])]]))
        out.append(Failure(scenario, tuple(sorted(set(gs)))))
    if not out:
        raise TopologyError("no failure given: use all-single or A-B[+C-D],...")
    return out


def surviving_topology(topo: Topology, link_up: np.ndarray) -> tuple[Topology, np.ndarray]:
    """The network without its down links, and the original link id of each surviving link."""
    keep = np.flatnonzero(np.asarray(link_up) > 0.5)
    t = Topology(f"{topo.name}-surviving", topo.nodes, topo.src[keep], topo.dst[keep], topo.capacity_bps[keep],
                 topo.weight[keep], topo.latency_seconds[keep], topo.coordinates)
    return t, keep


def routable_tm(topo: Topology, tm: TrafficMatrix, link_up: np.ndarray) -> TrafficMatrix:
    """``tm`` without the demand of pairs the failure disconnects (no routing can carry it)."""
    lab = components(topo, np.asarray(link_up) > 0.5)
    d = np.where(lab[:, None] == lab[None, :], tm.demand_bps, 0.0)
    return TrafficMatrix(d, tm.label)


def stranded_pairs(topo: Topology, paths: PathSet, link_up: np.ndarray) -> np.ndarray:
    """Pairs (indices) left with no live candidate path although the surviving network connects them."""
    up = np.asarray(link_up) > 0.5
    alive = (paths.incidence @ (~up).astype(np.float64)) == 0
    live = np.add.reduceat(alive.astype(np.int64), paths.pair_ptr[:-1])
    lab = components(topo, up)
    return np.flatnonzero((live == 0) & (lab[paths.pairs[:, 0]] == lab[paths.pairs[:, 1]]))
