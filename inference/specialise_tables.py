"""One topology's layout for the specialised head (specialise.py), computed once in numpy.

``build_tables`` turns a registered topology (CSR incidence: each pair's paths and each path's links
contiguous) into the arrays the specialised graph takes as bound inputs (``t_*``), in one of three
layouts of the path <-> link moves:

- ``dense`` (small topologies): the [P*K, L+1] incidence; both directions are matrix products.
- ``csr``: link -> path through the padded [H, P, K] table of each path's links (one element per
  index); path -> link through a link-sorted table [R, W] of entries, heavy links split over rows.
- ``bucketed``: both directions gather *rows* of transposed [X, C*B] tables (one row of C x B values
  per index, not one value). Link -> path: the candidate slots grouped by hop count into a few
  buckets, each a [h_max, n] table of link ids (no padding to the longest path; ``_hop_buckets``
  picks the groups), a reduction over the bucket's hops, and one permutation ``t_perm`` back to
  slot order. Path -> link: the link-sorted table transposed to [W, R] (and [M, L+1] for split
  links) so the reductions run over the leading axis.

Empty candidate slots and hops past a path's end read the virtual link L, whose per-link values are
0 in every move the rounds make (so sums and maxima of non-negative values ignore it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .graph_builder import PAD

#: Largest P*K*(L+1) incidence held dense (floats); above it a sparse layout is used.
DENSE_LIMIT = 1 << 22
#: Cost of one more hop bucket, in gathered rows (its nodes' fixed cost).
BUCKET_ROWS = 1 << 14
LAYOUTS = ("auto", "dense", "csr", "bucketed")
#: The sparse layout ``auto`` picks per provider above DENSE_LIMIT. Measured (benchmarks/README.md): on
#: the CPU bucketed row gathers beat csr's one-value gathers (GtsCe 1.4x); on an H200 csr is faster
#: (GtsCe 6.4 vs 8.1 ms, Cogentco 9.8 vs 11.7, Kdl 141 vs 379: bucketed's generic reductions, and its
#: Concat of many buckets cannot be captured in a CUDA graph).
AUTO_SPARSE = {"cpu": "bucketed", "cuda": "csr"}


@dataclass(frozen=True)
class Tables:
    """One topology's layout, as arrays the specialised graph takes once (bound inputs ``t_*``)."""

    layout: str  # "dense" or "csr"
    num_pairs: int
    num_links: int
    num_paths: int
    k: int
    h: int
    arrays: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def _segment_rows(counts: np.ndarray, width: int) -> np.ndarray:
    return np.maximum(1, -(-counts // width))


def _choose_width(counts: np.ndarray) -> int:
    """Row width W of the link-sorted gather: least padded work (rows x W + links x rows-per-link)."""
    top = max(int(counts.max()), 1)
    cands = sorted({top} | {1 << e for e in range(4, int(math.log2(top)) + 1)})
    n_links = counts.shape[0] + 1

    def cost(w):
        rows = _segment_rows(counts, w)
        return int(rows.sum()) * w + (n_links * int(rows.max()) if rows.max() > 1 else 0)

    return min(cands, key=cost)


def build_tables(capacity_bps, latency_seconds, path_pair, inc_path, inc_link, num_pairs: int,
                 layout: str = "auto", bucket_rows: int = BUCKET_ROWS, provider: str = "cpu") -> Tables:
    """The layout of one topology (CSR incidence: each pair's paths and each path's links contiguous);
    ``bucket_rows``: the cost of one more hop bucket in gathered rows (0: one bucket per hop count);
    ``provider``: which sparse layout ``auto`` picks (``AUTO_SPARSE``)."""
    cap = np.asarray(capacity_bps, dtype=np.float32)
    lat = np.asarray(latency_seconds, dtype=np.float32)
    path_pair, inc_path, inc_link = (np.asarray(a, dtype=np.int64) for a in (path_pair, inc_path, inc_link))
    n_links, n_paths, n_pairs = cap.shape[0], path_pair.shape[0], int(num_pairs)
    cnt_pair = np.bincount(path_pair, minlength=n_pairs)
    k = int(cnt_pair.max())
    first_path = np.cumsum(cnt_pair) - cnt_pair
    slot = path_pair * k + (np.arange(n_paths) - first_path[path_pair])
    hops_cnt = np.bincount(inc_path, minlength=n_paths)
    h = int(hops_cnt.max())
    first_ent = np.cumsum(hops_cnt) - hops_cnt
    ent_slot = slot[inc_path]
    pk = n_pairs * k
    pad = np.full((pk, h), n_links, dtype=np.int32)
    pad[ent_slot, np.arange(inc_path.shape[0]) - first_ent[inc_path]] = inc_link
    valid = np.zeros(pk, dtype=bool)
    valid[slot] = True

    def ext(x, v):
        return np.concatenate([x.astype(np.float32), np.float32([v])])

    real = ext(np.ones(n_links), 0.0)
    lat_e = ext(np.maximum(lat, 0.0) + np.float32(1e-6), 0.0)
    neg_cap = ext(cap / (cap.max() * np.float32(-1.0)), -1.0)
    hops = real[pad].sum(axis=1, dtype=np.float32)
    path_lat = lat_e[pad].sum(axis=1, dtype=np.float32)
    bott_cap = -neg_cap[pad].max(axis=1)
    pad_big = np.where(valid, 0.0, PAD).astype(np.float32)
    pair_min_lat = (path_lat + pad_big).reshape(n_pairs, k).min(axis=1)

    def per_path(x):
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(1, n_pairs, k, 1))

    arrays = {
        "t_pad": np.ascontiguousarray(pad.T.reshape(h, n_pairs, k)),
        "t_slot": slot.astype(np.int32),
        "t_link": np.stack([np.float32(1.0) / ext(cap, 1.0), real]),  # [2, L+1]: 1 / capacity, real link
        "t_hops": per_path(hops), "t_path_lat": per_path(path_lat), "t_bott_cap": per_path(bott_cap),
        "t_pad_big": per_path(pad_big),
        "t_pair": np.stack([np.log(cnt_pair.astype(np.float32)), pair_min_lat]).reshape(2, 1, n_pairs, 1, 1)
                    .astype(np.float32),
    }
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = "dense" if pk * (n_links + 1) <= DENSE_LIMIT else AUTO_SPARSE.get(provider, "bucketed")
    if layout == "dense":
        inc = np.zeros((pk, n_links + 1), dtype=np.float32)
        np.add.at(inc, (ent_slot, inc_link), 1.0)
        arrays["t_inc"] = inc
        return Tables(layout, n_pairs, n_links, n_paths, k, h, arrays)
    idx1, idx2 = _link_sorted(inc_link, ent_slot, n_links, pk)
    if layout == "csr":
        arrays["t_idx1"] = idx1
        if idx2 is not None:
            arrays["t_idx2"] = idx2
        return Tables(layout, n_pairs, n_links, n_paths, k, h, arrays)
    del arrays["t_pad"]
    slot_hops = np.zeros(pk, dtype=np.int64)
    slot_hops[slot] = hops_cnt
    limits = _hop_buckets(np.bincount(np.maximum(slot_hops, 1)), bucket_rows)
    bucket = np.searchsorted(limits, np.maximum(slot_hops, 1))  # bucket of each slot (empty slots: 1 hop of L)
    order = np.argsort(bucket, kind="stable")
    starts = np.searchsorted(bucket[order], np.arange(len(limits) + 1))
    for i, top in enumerate(limits):
        members = order[starts[i]:starts[i + 1]]
        if members.size:
            arrays[f"t_bucket{i}"] = np.ascontiguousarray(pad[members, :top].T)  # [h_max, n] link ids
    perm = np.empty(pk, dtype=np.int32)
    perm[order] = np.arange(pk, dtype=np.int32)
    arrays["t_perm"] = perm  # slot -> its row in the buckets' concatenation
    arrays["t_idx1"] = np.ascontiguousarray(idx1.T)  # [W, R]
    if idx2 is not None:
        arrays["t_idx2"] = np.ascontiguousarray(idx2.T)  # [M, L+1]
    return Tables(layout, n_pairs, n_links, n_paths, k, h, arrays)


def _link_sorted(inc_link: np.ndarray, ent_slot: np.ndarray, n_links: int, pk: int):
    """Each link's entries (their candidate slots) in rows of width W, a heavy link over several rows:
    idx1 [R, W] (``pk``: a zero slot), and idx2 [L+1, M] (row ``R``: a zero row) of each link's rows
    when a link needs more than one (else None)."""
    counts = np.bincount(inc_link, minlength=n_links)
    w = _choose_width(counts)
    rows = _segment_rows(counts, w)
    row_start = np.cumsum(rows) - rows
    order = np.argsort(inc_link, kind="stable")
    sorted_link = inc_link[order]
    link_first = np.cumsum(counts) - counts
    rank = np.arange(order.shape[0]) - link_first[sorted_link]
    idx1 = np.full((int(rows.sum()), w), pk, dtype=np.int32)
    idx1[row_start[sorted_link] + rank // w, rank % w] = ent_slot[order]
    m2 = int(rows.max())
    if m2 <= 1:
        return idx1, None
    idx2 = np.full((n_links + 1, m2), idx1.shape[0], dtype=np.int32)
    lk = np.repeat(np.arange(n_links), rows)
    idx2[lk, np.arange(lk.shape[0]) - row_start[lk]] = np.arange(lk.shape[0])
    return idx1, idx2


def _hop_buckets(count_by_hops: np.ndarray, bucket_rows: int = BUCKET_ROWS) -> np.ndarray:
    """Largest hop count of each bucket (ascending), the grouping of slots by hop count that gathers the
    fewest rows: sum over buckets of (slots x the bucket's largest hop count) + ``bucket_rows`` per bucket.
    ``count_by_hops[h]``: slots of h hops."""
    hops = np.flatnonzero(count_by_hops)
    n = np.concatenate([[0], np.cumsum(count_by_hops[hops])])  # slots with the first i distinct hop counts
    best = np.full(hops.size + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(hops.size + 1, dtype=np.int64)
    for j in range(1, hops.size + 1):  # a bucket holds distinct hop counts i..j-1 (<= ~60 of them)
        costs = best[:j] + (n[j] - n[:j]) * float(hops[j - 1]) + bucket_rows
        cut[j] = int(np.argmin(costs))
        best[j] = costs[cut[j]]
    limits, j = [], hops.size
    while j > 0:
        limits.append(int(hops[j - 1]))
        j = cut[j]
    return np.asarray(limits[::-1], dtype=np.int64)
