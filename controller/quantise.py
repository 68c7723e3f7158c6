"""Split ratios -> integer select-group bucket weights with a stated error bound.

Open vSwitch's ``dp_hash`` selection method maps a packet's datapath hash onto ``n_hash`` slots and
gives each bucket a number of slots proportional to its weight; it only uses dp_hash while
``total_weight / min_weight <= 256`` (else it falls back to a method that does not split here). So each
pair's weights are quantised to integers summing to exactly ``total`` (default 256): the smallest
non-zero weight is 1, the ratio stays within OVS's limit, and largest-remainder rounding bounds the
error of every bucket: ``|w_i / total - r_i| < 1 / total`` (floor loses < 1 unit, and at most one unit
is added back to any bucket). Ratios below ``0.5 / total`` may round to 0 and their path is not used.
"""

from __future__ import annotations

import numpy as np

#: Weights of one pair's buckets sum to this. 256 = the largest dp_hash table OVS builds.
DEFAULT_TOTAL_WEIGHT = 256


def quantise_weights(split: np.ndarray, pair_ptr: np.ndarray, total: int = DEFAULT_TOTAL_WEIGHT) -> np.ndarray:
    """Integer weights [Np] (int64) summing to ``total`` per pair, by largest remainder.

    ``split`` must be >= 0 and sum to ~1 per pair (it is renormalised per pair first so that
    small float drift never changes the total). Ties go to the lower path index (deterministic).
    """
    split = np.asarray(split, dtype=np.float64)
    pair_ptr = np.asarray(pair_ptr, dtype=np.int64)
    if total < 1:
        raise ValueError("total weight must be >= 1")
    if split.ndim != 1 or split.shape[0] != pair_ptr[-1]:
        raise ValueError(f"split has shape {split.shape}, expected ({int(pair_ptr[-1])},)")
    if not np.all(np.isfinite(split)) or np.any(split < 0):
        raise ValueError("split must be finite and >= 0")
    counts = np.diff(pair_ptr)
    pair_of = np.repeat(np.arange(counts.size), counts)
    sums = np.add.reduceat(split, pair_ptr[:-1]) if split.size else np.zeros(0)
    # A pair whose ratios are all zero gets its whole weight on its first path (never an empty group).
    empty = sums <= 0
    if np.any(empty):
        split = split.copy()
        split[pair_ptr[:-1][empty]] = 1.0
        sums = np.where(empty, 1.0, sums)
    exact = split / sums[pair_of] * total
    base = np.floor(exact).astype(np.int64)
    remainder = exact - base
    deficit = total - np.add.reduceat(base, pair_ptr[:-1])
    # Rank paths inside their pair by descending remainder (stable sort: lower index wins ties). One
    # float key (pair index + 0.5 * (1 - remainder)) sorts by pair, then remainder: faster than lexsort.
    order = np.argsort(pair_of + 0.5 * (1.0 - remainder), kind="stable")
    rank = np.empty(split.size, dtype=np.int64)
    rank[order] = np.arange(split.size) - np.repeat(pair_ptr[:-1], counts)
    base += (rank < deficit[pair_of]).astype(np.int64)
    return base


def weights_to_split(weights: np.ndarray, pair_ptr: np.ndarray) -> np.ndarray:
    """The split ratios the switches realise for integer ``weights`` (for MLU reporting)."""
    weights = np.asarray(weights, dtype=np.float64)
    counts = np.diff(pair_ptr)
    sums = np.add.reduceat(weights, pair_ptr[:-1])
    return weights / np.repeat(np.where(sums > 0, sums, 1.0), counts)


def drop_small_paths(split: np.ndarray, pair_ptr: np.ndarray, min_share: float) -> np.ndarray:
    """Zero the paths whose share of their pair is below ``min_share`` (a pair's largest path always
    stays); ``quantise_weights`` renormalises the rest. Near-zero paths then hold no MPLS labels and no
    bucket, and do not appear and vanish from one interval to the next. ``min_share <= 0``: unchanged."""
    split = np.asarray(split, dtype=np.float64)
    if min_share <= 0 or split.size == 0:
        return split
    starts = np.asarray(pair_ptr[:-1])
    counts = np.diff(pair_ptr)
    sums = np.repeat(np.add.reduceat(split, starts), counts)
    share = split / np.where(sums > 0, sums, 1.0)
    top = np.repeat(np.maximum.reduceat(share, starts), counts)
    return np.where((share >= min_share) | (share >= top), split, 0.0)


def deadband_keep(new: np.ndarray, old: np.ndarray | None, pair_ptr: np.ndarray, max_distance: float,
                  act_now: np.ndarray | None = None, moved_bps_per_unit: np.ndarray | None = None,
                  max_moved_bps: np.ndarray | None = None) -> np.ndarray:
    """bool [pairs]: pairs whose installed weights ``old`` are kept instead of ``new``.

    A pair keeps its installed split while the L1 distance between the two splits (sum over its paths
    of the change of share, 0..2; twice the fraction of its traffic that would change path) is at most
    ``max_distance``, including a path starting or stopping; or, given ``moved_bps_per_unit`` (its
    demand / 2, so that distance x it = traffic that would change path) and ``max_moved_bps`` (per
    pair), while the traffic that would change path is at most that: a pair whose demand is too small
    to matter on any of its links is not rewritten for noise. Never kept: pairs in ``act_now`` (a path
    died, a repair path came or went), pairs with no valid installed group (weights not summing to the
    same total). ``max_distance <= 0`` keeps nothing."""
    n_pairs = len(pair_ptr) - 1
    if max_distance <= 0 or old is None or old.shape != new.shape or n_pairs == 0:
        return np.zeros(max(n_pairs, 0), dtype=bool)
    starts = np.asarray(pair_ptr[:-1])
    total_new = np.add.reduceat(new, starts)
    total_old = np.add.reduceat(old, starts)
    dist = np.add.reduceat(np.abs(new - old), starts) / np.where(total_new > 0, total_new, 1)
    small = dist <= max_distance
    if moved_bps_per_unit is not None and max_moved_bps is not None:
        small |= dist * moved_bps_per_unit <= max_moved_bps
    keep = small & (total_old == total_new) & (total_new > 0)
    if act_now is not None:
        keep &= ~act_now
    return keep


def apply_deadband(new: np.ndarray, old: np.ndarray | None, pair_ptr: np.ndarray, max_distance: float,
                   act_now: np.ndarray | None = None) -> np.ndarray:
    """``new`` with the installed weights ``old`` kept for the pairs ``deadband_keep`` selects."""
    keep = deadband_keep(new, old, pair_ptr, max_distance, act_now)
    if not keep.any():
        return new
    return np.where(np.repeat(keep, np.diff(pair_ptr)), old, new)
