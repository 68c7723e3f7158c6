"""Diverse candidate paths for every pair at once, vectorised over scipy's compiled graph searches.

Round 1 is each pair's shortest path, read off one all-sources shortest-path run. Each later round
gives every pair the path that shares the fewest failure groups (a link and its reverse fail together)
with the pair's earlier paths, then is shortest: a path disjoint from the earlier ones when one exists,
so round 2 already avoids every link of round 1 whose loss would not cut the pair. A round searches
many pairs in one multi-source Dijkstra over a block-diagonal graph (one block, with that pair's
penalties, per pair), so Python never loops over pairs or paths. A pair whose least-overlap path is
one it already has is handed to Yen's enumeration (networkx) for the rest: that is where few simple
paths remain, and Yen then finds exactly the ones there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra, shortest_path

from .coverage import uncovered_pairs
from .links import link_groups, link_matrix, reverse_links
from .topology import Topology

#: Upper bound on (pairs in one block-diagonal search) x (links): the dense penalty matrix of a batch.
BATCH_CELLS = 4_000_000
_HASH_SEED = 0x7E11


@dataclass(frozen=True)
class FlatPaths:
    """Paths as flat arrays: path j belongs to pair ``pair[j]`` and has links ``links[ptr[j]:ptr[j+1]]``."""

    pair: np.ndarray  # int64 [Np]
    ptr: np.ndarray  # int64 [Np+1]
    links: np.ndarray  # int64 [nnz]

    @property
    def hops(self) -> np.ndarray:
        return np.diff(self.ptr)

    @staticmethod
    def concat(parts: list["FlatPaths"]) -> "FlatPaths":
        parts = [p for p in parts if p.pair.size]
        if not parts:
            return FlatPaths(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
        hops = np.concatenate([p.hops for p in parts])
        return FlatPaths(np.concatenate([p.pair for p in parts]), np.concatenate([[0], np.cumsum(hops)]),
                         np.concatenate([p.links for p in parts]))

    def take(self, idx: np.ndarray) -> "FlatPaths":
        """The paths ``idx``, in that order."""
        hops = self.hops[idx]
        ptr = np.concatenate([[0], np.cumsum(hops)])
        within = np.arange(ptr[-1]) - np.repeat(ptr[:-1], hops)
        return FlatPaths(self.pair[idx], ptr, self.links[np.repeat(self.ptr[idx], hops) + within])


def path_hashes(paths: FlatPaths, num_links: int) -> np.ndarray:
    """A 64-bit hash of each path's link set (a simple path is fixed by its link set and its source)."""
    r = np.random.default_rng(_HASH_SEED).integers(1, 2**63, size=num_links, dtype=np.uint64)
    out = np.zeros(paths.pair.size, dtype=np.uint64)
    nz = paths.hops > 0
    if paths.links.size:
        sums = np.add.reduceat(r[paths.links], paths.ptr[:-1][nz])
        out[nz] = sums
    return out


def _walk_back(pred_of, src: np.ndarray, dst: np.ndarray, lm: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Follow predecessors from each dst back to its src; ``pred_of(idx, cur)`` gives cur's predecessor
    for the paths ``idx``. Returns (hops per path, links flat in traversal order)."""
    cur = dst.copy()
    cols = [cur % n]
    active = cur != src
    idx = np.flatnonzero(active)
    hops = np.zeros(src.size, dtype=np.int64)
    while idx.size:
        cur = cur.copy()
        cur[idx] = pred_of(idx, cur[idx])
        hops[idx] += 1
        cols.append(cur % n)
        idx = idx[cur[idx] != src[idx]]
    nodes = np.stack(cols)  # [D+1, P]: nodes from dst backwards, src repeated once reached
    step_links = lm[nodes[1:], nodes[:-1]] if len(cols) > 1 else np.zeros((0, src.size), np.int64)
    q_path = np.repeat(np.arange(src.size), hops)
    q = np.arange(hops.sum()) - np.repeat(np.cumsum(hops) - hops, hops)
    return hops, step_links[hops[q_path] - 1 - q, q_path]


def first_paths(topo: Topology, weight: np.ndarray | None, pairs: np.ndarray) -> FlatPaths:
    """Each pair's shortest path (unit weights when ``weight`` is None), from one all-sources search."""
    n = topo.num_nodes
    g = sp.csr_matrix((np.ones(topo.num_links) if weight is None else weight, (topo.src, topo.dst)), shape=(n, n))
    sources = np.unique(pairs[:, 0])
    row = np.full(n, -1, dtype=np.int64)
    row[sources] = np.arange(sources.size)
    _, pred = shortest_path(g, method="D", directed=True, unweighted=weight is None, indices=sources,
                            return_predecessors=True)
    src, dst = pairs[:, 0], pairs[:, 1]
    reach = pred[row[src], dst] >= 0
    keep = np.flatnonzero(reach)
    hops, links = _walk_back(lambda i, cur: pred[row[src[keep][i]], cur], src[keep], dst[keep], link_matrix(topo), n)
    return FlatPaths(keep, np.concatenate([[0], np.cumsum(hops)]), links)


def least_overlap_round(topo: Topology, weight: np.ndarray, groups: np.ndarray, pairs: np.ndarray,
                        have: list[FlatPaths], todo: np.ndarray, forbid: np.ndarray | None = None) -> FlatPaths:
    """For the pairs ``todo`` (sorted indices into ``pairs``): the shortest path among those sharing the
    fewest failure groups (counted with multiplicity) with the pair's paths in ``have`` (each sorted
    by pair). ``forbid`` (one group per pair of ``todo``, -1 for none) is avoided wherever possible."""
    n, L = topo.num_nodes, topo.num_links
    base = sp.csr_matrix((np.arange(L, dtype=np.float64) + 1, (topo.src, topo.dst)), shape=(n, n))
    perm = base.data.astype(np.int64) - 1  # link id of each CSR entry
    big = float(weight.sum()) + 1.0
    lm = link_matrix(topo)
    slot = np.full(pairs.shape[0], -1, dtype=np.int64)
    batch = max(1, BATCH_CELLS // max(L, 1))
    out = []
    for lo in range(0, todo.size, batch):
        ids = todo[lo:lo + batch]
        B = ids.size
        slot[ids] = np.arange(B)
        own = FlatPaths.concat([
            r.take(np.arange(np.searchsorted(r.pair, ids[0]), np.searchsorted(r.pair, ids[-1], side="right")))
            for r in have])
        own = own.take(np.flatnonzero(slot[own.pair] >= 0))
        uses = np.zeros((B, groups.max() + 1))
        np.add.at(uses, (np.repeat(slot[own.pair], own.hops), groups[own.links]), 1.0)
        slot[ids] = -1
        if forbid is not None:
            f = forbid[lo:lo + batch]
            rows = np.flatnonzero(f >= 0)
            uses[rows, f[rows]] += groups.size * len(have) + 1.0  # dearer than any path without it
        data = (weight[perm][None, :] + big * uses[:, groups[perm]]).ravel()
        indptr = (base.indptr[None, :-1] + L * np.arange(B)[:, None]).ravel()
        g = sp.csr_matrix((data, (base.indices[None, :] + n * np.arange(B)[:, None]).ravel(),
                           np.concatenate([indptr, [B * L]])), shape=(B * n, B * n))
        src = pairs[ids, 0] + n * np.arange(B)
        dst = pairs[ids, 1] + n * np.arange(B)
        _, pred, _ = dijkstra(g, directed=True, indices=src, return_predecessors=True, min_only=True)
        reach = pred[dst] >= 0
        k = np.flatnonzero(reach)
        hops, links = _walk_back(lambda i, cur: pred[cur], src[k], dst[k], lm, n)
        out.append(FlatPaths(ids[k], np.concatenate([[0], np.cumsum(hops)]), links))
    return FlatPaths.concat(out)


def diverse_paths(topo: Topology, k: int, weight: np.ndarray | None, pairs: np.ndarray) -> FlatPaths:
    """Up to k paths per pair of ``pairs`` [P, 2]: shortest first, then least-overlap paths, then Yen's
    for pairs where least overlap finds nothing new. Paths are grouped by pair, in round order."""
    first = first_paths(topo, weight, pairs)
    w = np.ones(topo.num_links) if weight is None else np.asarray(weight, dtype=np.float64)
    groups = link_groups(topo)
    rounds = [first]
    todo = first.pair
    exhausted = np.zeros(pairs.shape[0], dtype=bool)
    for _ in range(1, k):
        if todo.size == 0:
            break
        new = least_overlap_round(topo, w, groups, pairs, rounds, todo)
        dup = _duplicates(FlatPaths.concat(rounds), new, topo.num_links)
        exhausted[new.pair[dup]] = True
        new = new.take(np.flatnonzero(~dup))
        rounds.append(new)
        todo = new.pair
    flat = _group_by_pair(FlatPaths.concat(rounds))
    if k > 1 and exhausted.any():
        flat = _fill_with_yen(topo, k, weight, pairs, flat, np.flatnonzero(exhausted))
    return close_gaps(topo, w, groups, pairs, flat) if k > 1 else flat


#: Rounds of ``close_gaps``: each closes at least one gap of every pair that still has one.
GAP_ROUNDS = 4


def close_gaps(topo: Topology, weight: np.ndarray, groups: np.ndarray, pairs: np.ndarray,
               flat: FlatPaths) -> FlatPaths:
    """Where every path of a pair crosses a group whose loss the pair would survive (least overlap can
    share a different link of the first path than the one that mattered), the pair's last path gives
    way to its least-overlap path that avoids that group; repeated while gaps close."""
    for _ in range(GAP_ROUNDS):
        gaps = uncovered_pairs(topo, pairs, flat)  # [U, 2] (pair, group), one row per pair
        if gaps.size == 0:
            break
        counts = np.bincount(flat.pair, minlength=pairs.shape[0])
        last = np.searchsorted(flat.pair, gaps[:, 0], side="right") - 1
        multi = counts[gaps[:, 0]] > 1
        gaps, last = gaps[multi], last[multi]
        if gaps.size == 0:
            break
        keep = np.ones(flat.pair.size, dtype=bool)
        keep[last] = False
        rest = flat.take(np.flatnonzero(keep))
        new = least_overlap_round(topo, weight, groups, pairs, [rest], gaps[:, 0], gaps[:, 1])
        ok = ~np.isin(np.arange(new.pair.size), _uses_group(new, groups, dict(zip(gaps[:, 0].tolist(), gaps[:, 1].tolist()))))
        dup = _duplicates(rest, new, topo.num_links)
        new = new.take(np.flatnonzero(ok & ~dup))
        if new.pair.size == 0:
            break
        replaced = np.isin(flat.pair[last], new.pair)
        keep = np.ones(flat.pair.size, dtype=bool)
        keep[last[replaced]] = False
        flat = _group_by_pair(FlatPaths.concat([flat.take(np.flatnonzero(keep)), new]))
    return flat


def _uses_group(paths: FlatPaths, groups: np.ndarray, group_of_pair: dict[int, int]) -> np.ndarray:
    """Indices of ``paths`` that cross the group named for their pair."""
    want = np.array([group_of_pair[p] for p in paths.pair.tolist()], dtype=np.int64)
    hit = groups[paths.links] == np.repeat(want, paths.hops)
    if not hit.size:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.add.reduceat(hit.astype(np.int64), paths.ptr[:-1][paths.hops > 0]) > 0)


def _duplicates(have: FlatPaths, new: FlatPaths, num_links: int) -> np.ndarray:
    """bool per path of ``new``: the same link set as a path its pair already has in ``have``."""
    hh, nh = path_hashes(have, num_links), path_hashes(new, num_links)
    known = set(zip(have.pair.tolist(), hh.tolist()))
    return np.array([(p, h) in known for p, h in zip(new.pair.tolist(), nh.tolist())], dtype=bool)


def _group_by_pair(flat: FlatPaths) -> FlatPaths:
    return flat.take(np.argsort(flat.pair, kind="stable"))


def _fill_with_yen(topo: Topology, k: int, weight: np.ndarray | None, pairs: np.ndarray, flat: FlatPaths,
                   short: np.ndarray) -> FlatPaths:
    """Top the pairs ``short`` up to k with Yen's paths they do not have yet."""
    g = nx.DiGraph()
    g.add_nodes_from(range(topo.num_nodes))
    w = np.ones(topo.num_links) if weight is None else weight
    g.add_edges_from((u, v, {"w": x}) for u, v, x in zip(topo.src.tolist(), topo.dst.tolist(), w.tolist()))
    lm = link_matrix(topo)
    hashes = path_hashes(flat, topo.num_links)
    count = np.bincount(flat.pair, minlength=pairs.shape[0])
    r = np.random.default_rng(_HASH_SEED).integers(1, 2**63, size=topo.num_links, dtype=np.uint64)
    extra_pair, extra_links, extra_hops = [], [], []
    for i in short.tolist():
        seen = set(hashes[flat.pair == i].tolist())
        need = k - int(count[i])
        s, t = int(pairs[i, 0]), int(pairs[i, 1])
        for nodes in nx.shortest_simple_paths(g, s, t, weight=None if weight is None else "w"):
            if need == 0:
                break
            links = lm[nodes[:-1], nodes[1:]]
            h = int(r[links].sum(dtype=np.uint64))
            if h in seen:
                continue
            seen.add(h)
            extra_pair.append(i)
            extra_links.append(links)
            extra_hops.append(links.size)
            need -= 1
    if not extra_pair:
        return flat
    extra = FlatPaths(np.array(extra_pair, np.int64), np.concatenate([[0], np.cumsum(extra_hops)]),
                      np.concatenate(extra_links))
    return _group_by_pair(FlatPaths.concat([flat, extra]))


def mirrored_paths(topo: Topology, flat: FlatPaths, pairs: np.ndarray, rev: np.ndarray) -> tuple[np.ndarray, FlatPaths]:
    """The reverse of every path (pair (s, t) -> (t, s)): the reversed pairs and paths, same order."""
    hops = flat.hops
    within = np.arange(flat.links.size) - np.repeat(flat.ptr[:-1], hops)
    back = np.repeat(flat.ptr[1:] - 1, hops) - within  # position of the mirrored link
    return pairs[:, ::-1].copy(), FlatPaths(flat.pair, flat.ptr, rev[flat.links[back]])


def parallel_diverse_paths(topo: Topology, k: int, weight: np.ndarray | None, pairs: np.ndarray,
                           workers: int = 1) -> FlatPaths:
    """``diverse_paths`` with the pairs split over ``workers`` forked processes (every step works per
    pair, so the result is the same for any number of workers)."""
    if workers <= 1 or pairs.shape[0] < 1000:
        return diverse_paths(topo, k, weight, pairs)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    cuts = np.linspace(0, pairs.shape[0], workers + 1).astype(np.int64)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
        parts = list(pool.map(diverse_paths, [topo] * workers, [k] * workers, [weight] * workers,
                              [pairs[a:b] for a, b in zip(cuts[:-1], cuts[1:])]))
    return FlatPaths.concat([FlatPaths(p.pair + a, p.ptr, p.links) for p, a in zip(parts, cuts[:-1].tolist())])


def all_pair_paths(topo: Topology, k: int, weight: np.ndarray | None, workers: int = 1) -> tuple[np.ndarray, FlatPaths]:
    """``diverse_paths`` for every ordered pair, searching src < dst only and mirroring when every link
    has a reverse of the same weight. Returns (pairs [P, 2] sorted, paths grouped by pair)."""
    w = np.ones(topo.num_links) if weight is None else np.asarray(weight, dtype=np.float64)
    rev = reverse_links(topo)
    all_pairs = topo.all_pairs()
    if rev is None or not np.array_equal(w[rev], w):
        return all_pairs, parallel_diverse_paths(topo, k, weight, all_pairs, workers)
    half = all_pairs[all_pairs[:, 0] < all_pairs[:, 1]]
    fwd = parallel_diverse_paths(topo, k, weight, half, workers)
    back_pairs, back = mirrored_paths(topo, fwd, half, rev)
    both = np.concatenate([half, back_pairs])
    flat = FlatPaths.concat([fwd, FlatPaths(back.pair + half.shape[0], back.ptr, back.links)])
    order = np.lexsort((both[:, 1], both[:, 0]))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    flat = FlatPaths(rank[flat.pair], flat.ptr, flat.links)
    return both[order], _group_by_pair(flat)
