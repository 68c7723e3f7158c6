"""Incremental path sets: after a topology change, recompute only the pairs the change touches.

A pair keeps its candidate paths when every one of them still exists with the same weights, its
shortest path did not get shorter, and the kept paths still cover every single failure the new
network lets the pair survive. Every other pair (and every pair of a new node) gets diverse paths
(``tecore.diverse``) on the new topology. Seeded paths of untouched pairs are kept as they are; a full
``compute_paths`` re-seeds them.
"""

from __future__ import annotations

import numpy as np

from .coverage import unavoided
from .diverse import FlatPaths, diverse_paths
from .links import link_groups, link_matrix
from .failures import components
from .pathset import PathError, PathSet
from .strategies import metric_values
from .stretch import shortest_distances
from .topology import Topology


def update_paths(old: PathSet, old_topo: Topology, new_topo: Topology) -> PathSet:
    """The path set of ``new_topo`` built from ``old`` (computed for ``old_topo``), recomputing only
    the pairs the change touches. Nodes and links are matched by name."""
    if old.topology_hash != old_topo.content_hash:
        raise PathError("the old path set was not built for the old topology")
    if new_topo.content_hash == old_topo.content_hash:
        return old
    n_new = new_topo.num_nodes
    node_map = np.array([new_topo.node_index.get(x, -1) for x in old_topo.nodes], dtype=np.int64)
    lm_new = link_matrix(new_topo)
    s_new, d_new = node_map[old_topo.src], node_map[old_topo.dst]
    link_map = np.where((s_new >= 0) & (d_new >= 0), lm_new[np.maximum(s_new, 0), np.maximum(d_new, 0)], -1)
    same_w = link_map >= 0
    same_w[same_w] = new_topo.weight[link_map[same_w]] == old_topo.weight[same_w]
    # Pairs whose every path survives unchanged (links present, same weights) and whose ends remain.
    path_ok = np.minimum.reduceat(same_w[old.path_links].astype(np.int8), old.path_ptr[:-1]).astype(bool)
    pair_ok = np.minimum.reduceat(path_ok.astype(np.int8), old.pair_ptr[:-1]).astype(bool)
    pairs_new = node_map[old.pairs]
    pair_ok &= (pairs_new >= 0).all(axis=1)
    # Shortest paths that got shorter (a new link): the first path is no longer a shortest one.
    w_new = metric_values(new_topo, "weight")
    links_new = np.where(same_w[old.path_links], link_map[old.path_links], 0)
    cost_new = np.add.reduceat(w_new[links_new], old.path_ptr[:-1])
    first = old.pair_ptr[:-1]
    dist = _weighted_distances(new_topo)
    ps_, pt_ = np.maximum(pairs_new[:, 0], 0), np.maximum(pairs_new[:, 1], 0)
    pair_ok &= cost_new[first] <= dist[ps_, pt_] * (1 + 1e-9) + 1e-12
    kept = _remap(old, np.flatnonzero(pair_ok), pairs_new, link_map, new_topo)
    # Kept pairs that no longer cover every survivable single failure of the new network.
    if kept.num_pairs:
        cand = unavoided(new_topo, kept)
        bad = np.zeros(kept.num_pairs, dtype=bool)
        for g in np.unique(cand[:, 1]).tolist():
            rows = cand[cand[:, 1] == g]
            lab = components(new_topo, _group_up(new_topo, g))
            p = kept.pairs[rows[:, 0]]
            bad[rows[lab[p[:, 0]] == lab[p[:, 1]], 0]] = True
        keep_pairs = np.flatnonzero(~bad)
    else:
        keep_pairs = np.zeros(0, np.int64)
    have = np.zeros((n_new, n_new), dtype=bool)
    have[kept.pairs[keep_pairs, 0], kept.pairs[keep_pairs, 1]] = True
    lab = components(new_topo, np.ones(new_topo.num_links, bool))
    want = new_topo.all_pairs()
    todo = want[(~have[want[:, 0], want[:, 1]]) & (lab[want[:, 0]] == lab[want[:, 1]])]
    weight = None if np.all(new_topo.weight == 1.0) else new_topo.weight
    fresh = diverse_paths(new_topo, old.k, weight, todo) if todo.size else None
    return _merge(new_topo, old, kept, keep_pairs, todo, fresh)


def _weighted_distances(topo: Topology) -> np.ndarray:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import shortest_path

    if np.all(topo.weight == 1.0):
        return shortest_distances(topo, "hop")
    g = sp.csr_matrix((topo.weight, (topo.src, topo.dst)), shape=(topo.num_nodes, topo.num_nodes))
    return shortest_path(g, method="D", directed=True)


def _group_up(topo: Topology, g: int) -> np.ndarray:
    return link_groups(topo) != g


def _remap(old: PathSet, pairs_idx: np.ndarray, pairs_new: np.ndarray, link_map: np.ndarray,
           new_topo: Topology) -> PathSet:
    """The pairs ``pairs_idx`` of ``old`` with node and link ids of the new topology."""
    counts = np.diff(old.pair_ptr)[pairs_idx]
    path_idx = np.concatenate([np.arange(old.pair_ptr[i], old.pair_ptr[i + 1]) for i in pairs_idx.tolist()]) \
        if pairs_idx.size else np.zeros(0, np.int64)
    flat = FlatPaths(old.path_pair, old.path_ptr, old.path_links).take(path_idx)
    return PathSet(new_topo.content_hash, new_topo.num_nodes, new_topo.num_links, pairs_new[pairs_idx],
                   np.concatenate([[0], np.cumsum(counts)]), flat.ptr, link_map[flat.links],
                   strategy=old.strategy, k=old.k) if pairs_idx.size else \
        PathSet(new_topo.content_hash, new_topo.num_nodes, new_topo.num_links, np.zeros((0, 2), np.int64),
                np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64), strategy=old.strategy, k=old.k)


def _merge(topo: Topology, old: PathSet, kept: PathSet, keep_pairs: np.ndarray, todo: np.ndarray,
           fresh: FlatPaths | None) -> PathSet:
    parts, pair_rows = [], []
    if keep_pairs.size:
        sub = FlatPaths(kept.path_pair, kept.path_ptr, kept.path_links)
        idx = np.concatenate([np.arange(kept.pair_ptr[i], kept.pair_ptr[i + 1]) for i in keep_pairs.tolist()])
        part = sub.take(idx)
        rank = np.full(kept.num_pairs, -1)
        rank[keep_pairs] = np.arange(keep_pairs.size)
        parts.append(FlatPaths(rank[part.pair], part.ptr, part.links))
        pair_rows.append(kept.pairs[keep_pairs])
    if fresh is not None and fresh.pair.size:
        parts.append(FlatPaths(fresh.pair + sum(r.shape[0] for r in pair_rows), fresh.ptr, fresh.links))
        pair_rows.append(todo)
    pairs = np.concatenate(pair_rows) if pair_rows else np.zeros((0, 2), np.int64)
    flat = FlatPaths.concat(parts)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    flat = FlatPaths(rank[flat.pair], flat.ptr, flat.links)
    flat = flat.take(np.argsort(flat.pair, kind="stable"))
    counts = np.bincount(flat.pair, minlength=pairs.shape[0])
    has = counts > 0
    return PathSet(topo.content_hash, topo.num_nodes, topo.num_links, pairs[order][has],
                   np.concatenate([[0], np.cumsum(counts[has])]), flat.ptr, flat.links,
                   strategy=old.strategy, k=old.k)
