"""Repair paths: pairs whose every candidate path is down get the shortest surviving path (pure; no os-ken).

A path set covers the failures it was built for; two or more failures (or a thin path set) can leave a
pair with no live candidate while the network is still connected. ``PathRepair`` keeps, for the
current link state, one repair path per such *stranded* pair: the least-cost path by the routing
metric over the links that are up (Dijkstra from the stranded pairs' sources only). The path set the
controller routes over is the base path set with each repair path appended to its pair's paths, so
routers (head, LP, shortest paths) treat a repaired pair like any other. When its base paths come
back, the repair path goes and the base path set is back.

Labels: base path ``j`` keeps label ``label_base + j``; repair paths take labels above the base
range, never one that is installed or held by another repair path, so a label is never rewritten in
place (the plan adds new labels before it moves a group, and deletes the old ones last). A repair
path that is still alive is kept (same path, same label) while the link state changes elsewhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from tecore import PathSet, Topology

from .failure import path_alive

log = logging.getLogger(__name__)

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class RepairPaths:
    """One path per repaired pair: pair index (of the base path set), links, label."""

    pairs: np.ndarray = field(default_factory=lambda: _EMPTY)  # int64 [R], sorted
    ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # int64 [R+1]
    links: np.ndarray = field(default_factory=lambda: _EMPTY)  # int64 [nnz]
    labels: np.ndarray = field(default_factory=lambda: _EMPTY)  # int64 [R]

    @property
    def size(self) -> int:
        return int(self.pairs.size)

    def select(self, keep: np.ndarray) -> RepairPaths:
        keep = np.asarray(keep, dtype=bool)
        rows = np.repeat(keep, np.diff(self.ptr))
        return RepairPaths(self.pairs[keep], np.concatenate([[0], np.cumsum(np.diff(self.ptr)[keep])]).astype(np.int64),
                           self.links[rows], self.labels[keep])

    @staticmethod
    def merge(a: RepairPaths, b: RepairPaths) -> RepairPaths:
        """Union of two repair sets over different pairs, sorted by pair."""
        pairs = np.concatenate([a.pairs, b.pairs])
        hops = np.concatenate([np.diff(a.ptr), np.diff(b.ptr)])
        starts = np.concatenate([a.ptr[:-1], b.ptr[:-1] + a.links.size])
        links = np.concatenate([a.links, b.links])
        order = np.argsort(pairs, kind="stable")
        ptr = np.concatenate([[0], np.cumsum(hops[order])]).astype(np.int64)
        return RepairPaths(pairs[order], ptr, links[_ranges(starts[order], hops[order])],
                           np.concatenate([a.labels, b.labels])[order])


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``starts[i] : starts[i] + counts[i]``."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.repeat(np.asarray(starts, dtype=np.int64) - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())


def stranded_pairs(paths: PathSet, link_up: np.ndarray) -> np.ndarray:
    """int64: pairs none of whose candidate paths is alive."""
    alive = path_alive(paths, link_up)
    return np.flatnonzero(np.add.reduceat(alive.astype(np.int64), paths.pair_ptr[:-1]) == 0)


def shortest_surviving_paths(topo: Topology, src: np.ndarray, dst: np.ndarray,
                             link_up: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-cost paths (by ``topo.weight``) over the links that are up, for node pairs (src[i], dst[i]).

    Returns (found [n] bool, ptr [n_found + 1], links): the links of the i-th found pair's path are
    ``links[ptr[i]:ptr[i+1]]``, in traversal order. Dijkstra runs once per distinct source."""
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    n = topo.num_nodes
    up = np.flatnonzero(np.asarray(link_up) > 0.5)
    # Cheapest live link per (u, v): a CSR matrix would add up parallel links, so keep the minimum.
    order = up[np.lexsort((topo.weight[up], topo.dst[up], topo.src[up]))]
    first = np.ones(order.size, dtype=bool)
    first[1:] = (topo.src[order][1:] != topo.src[order][:-1]) | (topo.dst[order][1:] != topo.dst[order][:-1])
    best = order[first]
    graph = csr_matrix((topo.weight[best], (topo.src[best], topo.dst[best])), shape=(n, n))
    link_of = np.full((n, n), -1, dtype=np.int64)
    link_of[topo.src[best], topo.dst[best]] = best
    sources, row = np.unique(src, return_inverse=True)
    if sources.size == 0:
        return np.zeros(0, dtype=bool), np.zeros(1, dtype=np.int64), _EMPTY
    dist, pred = dijkstra(graph, directed=True, indices=sources, return_predecessors=True)
    found = np.isfinite(dist[row, dst]) & (src != dst)
    ptr, links = [0], []
    for r, d in zip(row[found].tolist(), dst[found].tolist()):  # failure events only, few pairs
        hops = []
        while pred[r, d] >= 0:
            hops.append(int(link_of[pred[r, d], d]))
            d = int(pred[r, d])
        links.extend(reversed(hops))
        ptr.append(len(links))
    return found, np.array(ptr, dtype=np.int64), np.array(links, dtype=np.int64)


def augment(base: PathSet, repair: RepairPaths) -> tuple[PathSet, np.ndarray]:
    """The base path set with each repair path appended to its pair's paths.

    Returns (paths, origin): ``origin[j]`` is the base index of path j, or ``-(r + 1)`` for repair path r."""
    if repair.size == 0:
        return base, np.arange(base.num_paths, dtype=np.int64)
    nb = base.num_paths
    # Sort key of every path: its pair, then base paths before the pair's repair path.
    pair_of = np.concatenate([base.path_pair, repair.pairs])
    is_rep = np.concatenate([np.zeros(nb, dtype=np.int64), np.ones(repair.size, dtype=np.int64)])
    order = np.lexsort((np.arange(pair_of.size), is_rep, pair_of))
    hops = np.concatenate([base.path_hops, np.diff(repair.ptr)])[order]
    starts = np.concatenate([base.path_ptr[:-1], repair.ptr[:-1] + base.path_links.size])[order]
    all_links = np.concatenate([base.path_links, repair.links])
    counts = np.bincount(pair_of, minlength=base.num_pairs)
    paths = PathSet(topology_hash=base.topology_hash, num_nodes=base.num_nodes, num_links=base.num_links,
                    pairs=base.pairs, pair_ptr=np.concatenate([[0], np.cumsum(counts)]),
                    path_ptr=np.concatenate([[0], np.cumsum(hops)]), path_links=all_links[_ranges(starts, hops)],
                    strategy=base.strategy, k=base.k)
    origin = np.where(order < nb, order, -(order - nb) - 1)
    return paths, origin.astype(np.int64)


def carry_by_label(old_labels: np.ndarray, old_values: np.ndarray, new_labels: np.ndarray) -> np.ndarray:
    """Values per path moved to another path set: a path keeps its value when its label is in both
    (labels identify paths), new paths get 0."""
    old_labels = np.asarray(old_labels, dtype=np.int64)
    order = np.argsort(old_labels)
    pos = np.minimum(np.searchsorted(old_labels[order], new_labels), max(old_labels.size - 1, 0))
    hit = old_labels[order][pos] == new_labels if old_labels.size else np.zeros(len(new_labels), dtype=bool)
    out = np.zeros(len(new_labels), dtype=np.asarray(old_values).dtype)
    out[hit] = np.asarray(old_values)[order][pos[hit]]
    return out


@dataclass(frozen=True)
class RepairUpdate:
    changed: bool  # the path set changed (new or removed repair paths)
    stranded: np.ndarray  # int64: pairs with no live base path
    added: np.ndarray  # int64: pairs that got a new repair path now
    removed: np.ndarray  # int64: pairs whose repair path went (base path back, or the repair path died)
    unreachable: np.ndarray  # int64: stranded pairs with no surviving path at all


class PathRepair:
    """Repair state of one base path set. ``update(link_up, labels_in_use)`` after every link-state change;
    ``paths`` / ``labels`` / ``origin`` are then the path set to route and install."""

    def __init__(self, topo: Topology, base: PathSet, label_base: int, label_end: int):
        self.topo, self.base = topo, base
        self.label_lo, self.label_end = label_base + base.num_paths, label_end
        self.base_labels = label_base + np.arange(base.num_paths, dtype=np.int64)
        self.repair = RepairPaths()
        self.stranded = _EMPTY
        self.unreachable = _EMPTY
        self._link_up: np.ndarray | None = None
        self._cursor = self.label_lo  # next repair label to try (labels rotate: no early reuse)
        self._set_paths()

    def _set_paths(self) -> None:
        self.paths, self.origin = augment(self.base, self.repair)
        self.labels = np.where(self.origin >= 0, self.base_labels[np.maximum(self.origin, 0)],
                               self.repair.labels[np.maximum(-self.origin - 1, 0)] if self.repair.size else 0)

    def current(self, link_up: np.ndarray) -> bool:
        """True when the repairs were computed for this link state (nothing to do)."""
        return self._link_up is not None and np.array_equal(link_up, self._link_up)

    def update(self, link_up: np.ndarray, labels_in_use: np.ndarray) -> RepairUpdate:
        link_up = np.asarray(link_up, dtype=np.float64)
        if self.current(link_up):
            return RepairUpdate(False, self.stranded, _EMPTY, _EMPTY, self.unreachable)
        self._link_up = link_up.copy()
        stranded = stranded_pairs(self.base, link_up)
        cur = self.repair
        rep_alive = np.ones(cur.size, dtype=bool)
        if cur.size:
            down = np.asarray(link_up) <= 0.5
            rep_alive = np.add.reduceat(down[cur.links].astype(np.int64), cur.ptr[:-1]) == 0
        keep = np.isin(cur.pairs, stranded) & rep_alive
        need = np.setdiff1d(stranded, cur.pairs[keep])
        found, ptr, links = shortest_surviving_paths(self.topo, self.base.pairs[need, 0], self.base.pairs[need, 1],
                                                     link_up)
        labels = self._allocate(int(found.sum()), np.concatenate([np.asarray(labels_in_use, dtype=np.int64),
                                                                  cur.labels]))
        if labels.size < found.sum():  # label space full: the rest stay stranded
            log.error("no free MPLS label for %d repair path(s); those pairs stay without a path",
                      int(found.sum()) - labels.size)
            found[np.flatnonzero(found)[labels.size:]] = False
            ptr = ptr[:labels.size + 1]
            links = links[:ptr[-1]]
        new_pairs = need[found]
        self.repair = RepairPaths.merge(cur.select(keep), RepairPaths(new_pairs, ptr, links, labels))
        self.stranded, self.unreachable = stranded, need[~found]
        changed = bool(new_pairs.size or (~keep).any())
        if changed:
            self._set_paths()
        return RepairUpdate(changed, stranded, new_pairs, cur.pairs[~keep], self.unreachable)

    def _allocate(self, n: int, in_use: np.ndarray) -> np.ndarray:
        """Up to ``n`` labels in [label_lo, label_end) not in ``in_use``, from a rotating cursor."""
        span = self.label_end - self.label_lo
        if n == 0 or span <= 0:
            return _EMPTY
        window = min(span, n + in_use.size)
        cand = self.label_lo + (self._cursor - self.label_lo + np.arange(window)) % span
        free = cand[~np.isin(cand, in_use)][:n]
        if free.size == 0:
            return _EMPTY
        self._cursor = self.label_lo + (int(free[-1]) + 1 - self.label_lo) % span
        return free.astype(np.int64)

    @property
    def repaired(self) -> np.ndarray:
        return self.repair.pairs

    # ------------------------------------------------------------------ reporting
    def _pair_name(self, p: int) -> str:
        s, d = self.base.pairs[p]
        return f"{self.topo.nodes[s]}->{self.topo.nodes[d]}"

    def _repair_nodes(self, r: int) -> list[str]:
        rp, topo = self.repair, self.topo
        links = rp.links[rp.ptr[r]:rp.ptr[r + 1]]
        return [topo.nodes[topo.src[links[0]]]] + [topo.nodes[n] for n in topo.dst[links]]

    def log_update(self, u: RepairUpdate) -> None:
        if u.added.size:
            p = int(u.added[0])
            via = "-".join(self._repair_nodes(int(np.searchsorted(self.repair.pairs, p))))
            log.warning("%d pair(s) have no live candidate path: %d repaired now over the surviving network "
                        "(e.g. %s via %s), %d repaired in all, %d unreachable", u.stranded.size, u.added.size,
                        self._pair_name(p), via, self.repaired.size, u.unreachable.size)
        elif u.removed.size:
            log.warning("%d repair path(s) removed (their pairs have live candidate paths again); %d pair(s) "
                        "stranded, %d repaired", u.removed.size, u.stranded.size, self.repaired.size)

    def state_json(self) -> dict:
        """GET /state: pairs with no live candidate path, and the repair paths of those that have one."""
        return {
            "stranded_pairs": [self._pair_name(int(p)) for p in self.stranded],
            "repaired_pairs": {self._pair_name(int(p)): {"path": self._repair_nodes(r), "label": int(self.repair.labels[r])}
                               for r, p in enumerate(self.repair.pairs.tolist())},
            "unreachable_pairs": [self._pair_name(int(p)) for p in self.unreachable],
        }
