"""Failure handling on split ratios: which paths survive a set of down links, local renormalisation,
and a path set restricted to live paths (for routers that must not use dead links).

Rule: a pair that still has a live candidate path is never left without one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tecore import PathSet


def path_alive(paths: PathSet, link_up: np.ndarray) -> np.ndarray:
    """bool [Np]: True when every link of the path is up."""
    down = (np.asarray(link_up, dtype=np.float64) <= 0.5).astype(np.float64)
    if down.shape != (paths.num_links,):
        raise ValueError(f"link_up has shape {down.shape}, expected ({paths.num_links},)")
    if not down.any():
        return np.ones(paths.num_paths, dtype=bool)
    return (paths.incidence @ down) == 0


@dataclass(frozen=True)
class MaskedSplit:
    split: np.ndarray  # float64 [Np], sums to 1 per pair
    alive: np.ndarray  # bool [Np]
    stranded_pairs: np.ndarray  # int64: pairs with no live candidate path (split left as given)
    rescued_pairs: np.ndarray  # int64: pairs whose live paths had zero weight: now split equally over them


def mask_split(paths: PathSet, split: np.ndarray, link_up: np.ndarray) -> MaskedSplit:
    """Drop paths over down links and renormalise the rest of each pair's weights."""
    split = np.asarray(split, dtype=np.float64)
    alive = path_alive(paths, link_up)
    starts = paths.pair_ptr[:-1]
    live_mass = np.add.reduceat(np.where(alive, split, 0.0), starts)
    live_count = np.add.reduceat(alive.astype(np.int64), starts)
    stranded = live_count == 0
    rescued = (live_count > 0) & (live_mass <= 0)
    pp = paths.path_pair
    out = np.where(alive, split, 0.0)
    # Pairs that had all their weight on dead paths: equal split over the live ones.
    out = np.where(rescued[pp] & alive, 1.0, out)
    sums = np.add.reduceat(out, starts)
    out = out / np.where(sums > 0, sums, 1.0)[pp]
    # No live path at all: keep what was asked (the traffic is lost either way; do not invent).
    out = np.where(stranded[pp], split, out)
    return MaskedSplit(out, alive, np.flatnonzero(stranded), np.flatnonzero(rescued))


@dataclass(frozen=True)
class RestrictedPaths:
    paths: PathSet  # same pairs, only the kept paths
    kept: np.ndarray  # int64 [Np']: index in the full path set of each kept path

    def expand(self, split_sub: np.ndarray, num_paths: int) -> np.ndarray:
        out = np.zeros(num_paths)
        out[self.kept] = split_sub
        return out


def restrict_paths(paths: PathSet, link_up: np.ndarray) -> RestrictedPaths:
    """The path set with dead paths removed; pairs with no live path keep all theirs."""
    alive = path_alive(paths, link_up)
    live_count = np.add.reduceat(alive.astype(np.int64), paths.pair_ptr[:-1])
    keep = alive | (live_count == 0)[paths.path_pair]
    kept = np.flatnonzero(keep)
    counts = np.add.reduceat(keep.astype(np.int64), paths.pair_ptr[:-1])
    hops = paths.path_hops[kept]
    entry_keep = np.repeat(keep, paths.path_hops)
    sub = PathSet(topology_hash=paths.topology_hash, num_nodes=paths.num_nodes, num_links=paths.num_links,
                  pairs=paths.pairs, pair_ptr=np.concatenate([[0], np.cumsum(counts)]),
                  path_ptr=np.concatenate([[0], np.cumsum(hops)]), path_links=paths.path_links[entry_keep],
                  strategy=paths.strategy, k=paths.k)
    return RestrictedPaths(sub, kept)
