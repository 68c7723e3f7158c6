"""Checks around a model run: inputs the model's float32 arithmetic cannot hold, and outputs no
caller may receive as a valid answer.

A model is a file an operator (or a compromised reload) swaps in; the service never trusts what it
returns. Split ratios must be finite, >= 0 and sum to 1 per pair (within ``SPLIT_SUM_TOLERANCE``),
link loads and MLU finite and >= 0; anything else fails the call with INTERNAL and a message naming
the first offence, so a broken model is visible at once instead of being installed in switches.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InvalidArgument, RequestError
from .topologies import FLOAT32_MAX, TopologyArrays

SPLIT_SUM_TOLERANCE = 1e-3


class InvalidModelOutput(RequestError):
    """The model returned something that is not a routing (a broken or hostile model file)."""

    code = "INTERNAL"


def check_demand_fits(demand_bps: np.ndarray, topo: TopologyArrays) -> None:
    """Refuse demands whose loads or utilisations overflow float32 inside the model (they would come
    back as inf/NaN): the total demand, over the smallest capacity, must stay in float32 range."""
    total = float(demand_bps.sum(dtype=np.float64))
    worst_util = total / float(topo.capacity_bps.min())
    if total > FLOAT32_MAX or worst_util > FLOAT32_MAX:
        raise InvalidArgument("demand_bps", f"total demand {total:.3g} bit/s over the smallest link capacity "
                                            f"{float(topo.capacity_bps.min()):.3g} bit/s overflows float32 (max "
                                            f"{FLOAT32_MAX:.3g}), the type the model computes in")


def check_outputs(model_version: str, topo: TopologyArrays, split: np.ndarray, link_load_bps: np.ndarray,
                  mlu: float) -> None:
    """Raise InvalidModelOutput unless the outputs are a routing of ``topo``."""
    def bad(what: str) -> InvalidModelOutput:
        return InvalidModelOutput(f"model {model_version} returned {what}; the answer was withheld")

    if split.shape[0] != topo.num_paths or link_load_bps.shape[0] != topo.num_links:
        raise bad(f"split[{split.shape[0]}] / link_load_bps[{link_load_bps.shape[0]}] for {topo.num_paths} "
                  f"paths / {topo.num_links} links")
    for name, arr in (("split", split), ("link_load_bps", link_load_bps)):
        wrong = ~np.isfinite(arr) | (arr < 0)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise bad(f"{name}[{i}] = {arr[i]} ({int(wrong.sum())} values not finite or negative)")
    if not (math.isfinite(mlu) and mlu >= 0):
        raise bad(f"mlu = {mlu}")
    sums = np.add.reduceat(split.astype(np.float64), topo.pair_starts)
    off = np.abs(sums - 1.0) > SPLIT_SUM_TOLERANCE
    if off.any():
        p = int(np.flatnonzero(off)[0])
        raise bad(f"split ratios of pair {p} summing to {sums[p]:.6g}, not 1 ({int(off.sum())} pairs off by more "
                  f"than {SPLIT_SUM_TOLERANCE:g})")
