"""Link-level helpers shared by path search, coverage and failures: cables, reverse links, link ids."""

from __future__ import annotations

import numpy as np

from .topology import Topology


def link_groups(topo: Topology) -> np.ndarray:
    """Failure group of each link: a link and its reverse (one cable) share the lower link id."""
    li = topo.link_index
    rev = np.array([li.get((v, u), i) for i, (u, v) in enumerate(zip(topo.src.tolist(), topo.dst.tolist()))])
    return np.minimum(np.arange(topo.num_links), rev).astype(np.int64)


def reverse_links(topo: Topology) -> np.ndarray | None:
    """Link id of each link's reverse, or None when some link has none."""
    li = topo.link_index
    rev = [li.get((v, u), -1) for u, v in zip(topo.src.tolist(), topo.dst.tolist())]
    return None if -1 in rev else np.array(rev, dtype=np.int64)


def link_matrix(topo: Topology) -> np.ndarray:
    """Dense [N, N] link id of (u, v), -1 where there is none."""
    m = np.full((topo.num_nodes, topo.num_nodes), -1, dtype=np.int64)
    m[topo.src, topo.dst] = np.arange(topo.num_links)
    return m
