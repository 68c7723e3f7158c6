"""Single-failure coverage of a path set: does every pair keep a candidate path when one link fails?

A failure takes down a *failure group*: a link and its reverse (one cable), or a one-way link alone.
A (pair, group) is *coverable* when the pair stays connected without the group; it is *covered* when
some candidate path of the pair avoids the group. A path set has full coverage when every coverable
(pair, group) is covered: then no single failure strands a pair the network could still carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, shortest_path

from .links import link_groups
from .pathset import PathSet
from .topology import Topology


@dataclass(frozen=True)
class Coverage:
    pair_groups: int  # coverable (pair, failure group) combinations
    covered: int  # of those, how many have a candidate path avoiding the group
    groups: int  # failure groups (cables)
    cutting_groups: int  # groups whose loss disconnects some pair of the path set (bridges)
    uncovered: np.ndarray  # int64 [U, 2]: (pair index, group id) left without a path
    stranding: dict[int, int]  # group id -> pairs it strands although they stay connected

    @property
    def ratio(self) -> float:
        return self.covered / self.pair_groups if self.pair_groups else 1.0

    @property
    def full(self) -> bool:
        return self.uncovered.shape[0] == 0

    def summary(self, topo: Topology) -> str:
        worst = max(self.stranding.values(), default=0)
        return (f"single-failure coverage {100 * self.ratio:.3f} % ({self.covered:,} of {self.pair_groups:,} "
                f"pairs x links); {len(self.stranding)} of {self.groups - self.cutting_groups} non-bridge link "
                f"failures strand pairs ({self.uncovered.shape[0]} pairs in total, worst {worst})")

    def as_dict(self, topo: Topology) -> dict:
        return {"pair_links": self.pair_groups, "covered": self.covered, "ratio": self.ratio,
                "links": self.groups, "bridges": self.cutting_groups,
                "stranding_failures": {topo.link_name(g): n for g, n in sorted(self.stranding.items())},
                "stranded_pairs_total": int(self.uncovered.shape[0])}


def group_ids(topo: Topology) -> np.ndarray:
    """The distinct failure groups of ``topo`` (each named by its lower link id)."""
    return np.unique(link_groups(topo))


def surviving(topo: Topology, down_groups) -> np.ndarray:
    """bool [L]: links still up when the groups ``down_groups`` fail."""
    return ~np.isin(link_groups(topo), np.asarray(list(down_groups), dtype=np.int64))


def _reach(topo: Topology, up: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """bool per (src, dst): dst reachable from src over the links ``up``."""
    n = topo.num_nodes
    g = sp.csr_matrix((np.ones(int(up.sum())), (topo.src[up], topo.dst[up])), shape=(n, n))
    if topo.is_symmetric:
        _, lab = connected_components(g, directed=True, connection="strong")
        return lab[src] == lab[dst]
    sources, row = np.unique(src, return_inverse=True)
    d = shortest_path(g, unweighted=True, indices=sources)
    return np.isfinite(d[row, dst])


def _connected_pairs_after(topo: Topology, up: np.ndarray, pairs: np.ndarray, all_pairs: bool) -> int:
    if all_pairs and topo.is_symmetric:
        n = topo.num_nodes
        g = sp.csr_matrix((np.ones(int(up.sum())), (topo.src[up], topo.dst[up])), shape=(n, n))
        _, lab = connected_components(g, directed=True, connection="strong")
        size = np.bincount(lab).astype(np.int64)
        return int((size * (size - 1)).sum())
    return int(_reach(topo, up, pairs[:, 0], pairs[:, 1]).sum())


def pair_group_counts(topo: Topology, paths: PathSet) -> sp.csr_matrix:
    """[P, G] number of each pair's paths that cross each failure group (G = max group id + 1)."""
    groups = link_groups(topo)
    path_group = sp.csr_matrix((np.ones(paths.path_links.size), groups[paths.path_links], paths.path_ptr),
                               shape=(paths.num_paths, topo.num_links))
    pair_path = sp.csr_matrix((np.ones(paths.num_paths), paths.path_pair, np.arange(paths.num_paths + 1)),
                              shape=(paths.num_paths, paths.num_pairs)).T.tocsr()
    return (pair_path @ path_group).tocsr()


def unavoided(topo: Topology, paths: PathSet) -> np.ndarray:
    """int64 [U, 2] (pair, group): groups that every candidate path of the pair crosses."""
    m = pair_group_counts(topo, paths).tocoo()
    on_all = m.data >= paths.paths_per_pair[m.row]
    return np.stack([m.row[on_all], m.col[on_all]], axis=1).astype(np.int64)


def uncovered_pairs(topo: Topology, pairs: np.ndarray, flat) -> np.ndarray:
    """int64 [U, 2] (pair index, group): one coverable group per pair that none of its paths avoids.
    ``flat`` is a ``tecore.diverse.FlatPaths`` grouped by pair, for the rows of ``pairs``."""
    counts = np.bincount(flat.pair, minlength=pairs.shape[0])
    has = np.flatnonzero(counts > 0)
    ps = PathSet(topo.content_hash, topo.num_nodes, topo.num_links, pairs[has],
                 np.concatenate([[0], np.cumsum(counts[has])]), flat.ptr, flat.links)
    gaps = coverage(topo, ps).uncovered
    if gaps.size == 0:
        return gaps
    first = np.unique(gaps[:, 0], return_index=True)[1]
    return np.stack([has[gaps[first, 0]], gaps[first, 1]], axis=1)


def coverage(topo: Topology, paths: PathSet) -> Coverage:
    """Single-failure coverage of ``paths`` on ``topo`` (one failure group at a time)."""
    gids = group_ids(topo)
    link_group = link_groups(topo)
    cand = unavoided(topo, paths)
    all_pairs = paths.num_pairs == _connected_pairs_after(topo, np.ones(topo.num_links, bool), paths.pairs, True)
    total, cutting = 0, 0
    keep = np.zeros(cand.shape[0], dtype=bool)
    base = _connected_pairs_after(topo, np.ones(topo.num_links, bool), paths.pairs, all_pairs)
    for g in gids.tolist():
        up = link_group != g
        after = _connected_pairs_after(topo, up, paths.pairs, all_pairs)
        cutting += after < base
        total += min(after, paths.num_pairs)
        rows = np.flatnonzero(cand[:, 1] == g)
        if rows.size:
            p = paths.pairs[cand[rows, 0]]
            keep[rows] = _reach(topo, up, p[:, 0], p[:, 1])
    uncovered = cand[keep]
    stranding = {int(g): int(c) for g, c in zip(*np.unique(uncovered[:, 1], return_counts=True))}
    return Coverage(total, total - int(uncovered.shape[0]), int(gids.size), int(cutting), uncovered, stranding)
