"""Which pairs keep their installed weights this plan (the weight deadband, with a guard on link loads).

``quantise.deadband_keep`` picks the pairs whose new split is close to the installed one (L1 distance,
or little traffic moved). Held pairs make the installed routing differ from the router's; the guard
bounds what that costs: on any link where the held splits put more than ``max_excess`` of capacity
above the router's own loads, every held pair crossing that link is re-planned after all. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from tecore import PathSet, Topology, link_loads

from .quantise import deadband_keep, weights_to_split

#: Largest excess load (fraction of capacity) the held pairs may put on a link over the router's split.
MAX_HELD_EXCESS_UTILISATION = 0.02


def pair_capacity_bps(topo: Topology, paths: PathSet) -> np.ndarray:
    """[pairs] the smallest link capacity on any of a pair's paths."""
    path_cap = np.minimum.reduceat(topo.capacity_bps[paths.path_links], paths.path_ptr[:-1])
    return np.minimum.reduceat(path_cap, paths.pair_ptr[:-1])


def held_pairs(topo: Topology, paths: PathSet, new: np.ndarray, old: np.ndarray | None, max_distance: float,
               act_now: np.ndarray | None, demand_bps: np.ndarray | None, pair_cap_bps: np.ndarray | None,
               deadband_load: float, max_excess: float = MAX_HELD_EXCESS_UTILISATION) -> np.ndarray:
    """bool [pairs]: pairs that keep ``old`` instead of ``new`` (quantised weights)."""
    ptr = paths.pair_ptr
    load = {}
    if demand_bps is not None and pair_cap_bps is not None and deadband_load > 0:
        load = {"moved_bps_per_unit": np.asarray(demand_bps, dtype=np.float64) / 2,
                "max_moved_bps": deadband_load * pair_cap_bps}
    keep = deadband_keep(new, old, ptr, max_distance, act_now, **load)
    if not keep.any() or demand_bps is None:
        return keep
    held = np.repeat(keep, np.diff(ptr))
    mixed = np.where(held, old, new)
    excess = (link_loads(paths, weights_to_split(mixed, ptr), demand_bps)
              - link_loads(paths, weights_to_split(new, ptr), demand_bps)) / topo.capacity_bps
    hot = excess > max_excess
    if hot.any():
        crosses = (paths.incidence @ hot.astype(np.float64)) > 0  # [paths] path uses a hot link
        uses = np.add.reduceat((crosses & ((old > 0) | (new > 0))).astype(np.int64), ptr[:-1]) > 0
        keep &= ~uses
    return keep
