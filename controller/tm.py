"""Traffic-matrix estimation from the byte counters of the ingress classification rules.

Every ingress switch has one classification rule per destination switch; its byte counter is exactly
the traffic that entered the network at that switch for that destination, i.e. one TM entry. Rates
come from counter deltas (wrap/reset safe), then optional EWMA smoothing and a history window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .counters import RateEstimator


@dataclass(frozen=True)
class TMSample:
    time_seconds: float
    demand_bps: np.ndarray  # float64 [N, N]


class TMEstimator:
    """Per ordered (ingress, egress) node pair rates in bit/s.

    ``alpha`` is the EWMA weight of the newest measurement (1.0 = no smoothing); ``history`` how many
    smoothed snapshots ``snapshot()`` keeps.
    """

    def __init__(self, num_nodes: int, alpha: float = 1.0, history: int = 60, min_dt_seconds: float = 0.0):
        if not 0 < alpha <= 1:
            raise ValueError("EWMA alpha must be in (0, 1]")
        if history < 1:
            raise ValueError("history must be >= 1")
        self.num_nodes = num_nodes
        self.alpha = alpha
        self._bytes = RateEstimator(num_nodes * num_nodes, min_dt_seconds=min_dt_seconds)
        self._smoothed = np.zeros(num_nodes * num_nodes)
        self._seen = np.zeros(num_nodes * num_nodes, dtype=bool)
        self.history: deque[TMSample] = deque(maxlen=history)

    def update(self, src: np.ndarray, dst: np.ndarray, byte_count: np.ndarray, time_seconds: float) -> None:
        """Counters of the classification rules of some ingress switches, read at ``time_seconds``."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        if src.size and (src.min() < 0 or dst.min() < 0 or max(src.max(), dst.max()) >= self.num_nodes):
            raise ValueError("TM counter for a node outside the topology")
        idx = src * self.num_nodes + dst
        rate_bps = self._bytes.update(idx, byte_count, time_seconds) * 8.0
        fresh = self._bytes.updated
        idx, rate_bps = idx[fresh], rate_bps[fresh]
        first = ~self._seen[idx]
        self._smoothed[idx] = np.where(first, rate_bps,
                                       self.alpha * rate_bps + (1 - self.alpha) * self._smoothed[idx])
        self._seen[idx] = True

    def forget(self, src: np.ndarray, dst: np.ndarray) -> None:
        """A rule was (re)installed: its next counter is a new baseline."""
        idx = np.asarray(src, dtype=np.int64) * self.num_nodes + np.asarray(dst, dtype=np.int64)
        self._bytes.forget(idx)

    def matrix(self) -> np.ndarray:
        return self._smoothed.reshape(self.num_nodes, self.num_nodes).copy()

    def snapshot(self, time_seconds: float) -> TMSample:
        """Record the current smoothed TM in the history window and return it."""
        s = TMSample(time_seconds, self.matrix())
        self.history.append(s)
        return s


def relative_change(old: np.ndarray | None, new: np.ndarray) -> float:
    """L1 change of a TM relative to the larger of the two totals (inf when there was none)."""
    if old is None:
        return float("inf")
    scale = max(float(np.abs(old).sum()), float(np.abs(new).sum()))
    if scale == 0:
        return 0.0
    return float(np.abs(new - old).sum()) / scale
