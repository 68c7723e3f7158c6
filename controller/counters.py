"""Rates from monotonic switch counters, safe against wrap-around and resets.

Switch counters (port tx_bytes, flow byte_count) only grow, except when they wrap at their width or
restart from zero (switch reconnect, flow re-installed). A drop is read as a wrap only when the
previous value sat in the top half of the counter range and the wrapped delta is plausible
(<= ``max_delta``); otherwise it is a reset and the delta is the new value (what was counted since the
restart: a lower bound, never a huge bogus spike).
"""

from __future__ import annotations

import numpy as np

COUNTER64 = 2 ** 64


def counter_delta(prev: np.ndarray, curr: np.ndarray, modulus: int = COUNTER64,
                  max_delta: np.ndarray | float | None = None) -> np.ndarray:
    """Per-element increase from ``prev`` to ``curr`` (uint64 arrays), wrap and reset safe."""
    prev = np.asarray(prev, dtype=np.uint64)
    curr = np.asarray(curr, dtype=np.uint64)
    if modulus > COUNTER64 or modulus < 2:
        raise ValueError("modulus must be in [2, 2**64]")
    grew = curr >= prev
    if modulus == COUNTER64:
        wrapped = curr - prev  # uint64 arithmetic wraps modulo 2**64 by itself
    else:
        wrapped = (curr + np.uint64(modulus) - prev) % np.uint64(modulus)
    top_half = prev >= np.uint64(modulus // 2)
    plausible = np.ones_like(grew) if max_delta is None else wrapped.astype(np.float64) <= max_delta
    is_wrap = ~grew & top_half & plausible
    return np.where(grew | is_wrap, wrapped, curr).astype(np.uint64)


class RateEstimator:
    """Rates (units per second) of ``size`` counters that are sampled at independent times.

    ``update(index, values, time_seconds)`` takes the samples of some counters (e.g. the ports of one
    switch); a counter's first sample sets its baseline and yields no rate. ``forget(index)`` makes
    the next sample a new baseline (port went down, flow re-installed).
    """

    def __init__(self, size: int, modulus: int = COUNTER64, max_rate: np.ndarray | float | None = None,
                 min_dt_seconds: float = 0.0):
        self.size = size
        #: A sample closer than this to its counter's baseline is skipped (the baseline stays): replies
        #: that queued up behind a busy switch or event thread and arrive together would otherwise divide
        #: a second's bytes by milliseconds.
        self.min_dt_seconds = min_dt_seconds
        self.updated = np.zeros(0, dtype=bool)  # of the last update: which of its counters got a new rate
        self.modulus = modulus
        self.max_rate = max_rate  # per-counter plausibility bound used for wrap detection
        self.last_value = np.zeros(size, dtype=np.uint64)
        self.last_time = np.full(size, np.nan)
        self.rate = np.zeros(size)  # last computed rate
        self.rate_time = np.full(size, np.nan)

    def update(self, index: np.ndarray, values: np.ndarray, time_seconds: float | np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        values = np.asarray(values, dtype=np.uint64)
        t = np.broadcast_to(np.asarray(time_seconds, dtype=np.float64), index.shape)
        prev_t = self.last_time[index]
        dt = t - prev_t
        has_base = np.isfinite(prev_t) & (dt > 0) & (dt >= self.min_dt_seconds)
        too_soon = np.isfinite(prev_t) & (dt > 0) & ~has_base
        max_delta = None
        if self.max_rate is not None:
            mr = np.broadcast_to(np.asarray(self.max_rate, dtype=np.float64), (self.size,))[index]
            max_delta = mr * np.where(has_base, dt, 0.0) * 1.5
        delta = counter_delta(self.last_value[index], values, self.modulus, max_delta).astype(np.float64)
        rate = np.where(has_base, delta / np.where(has_base, dt, 1.0), 0.0)
        sel = index[has_base]
        self.rate[sel] = rate[has_base]
        self.rate_time[sel] = t[has_base]
        keep = index[~too_soon]
        self.last_value[keep] = values[~too_soon]
        # Samples that arrive with a non-increasing timestamp only refresh the value.
        self.last_time[keep] = np.where(np.isfinite(prev_t) & (dt <= 0), prev_t, t)[~too_soon]
        self.updated = has_base
        return rate

    def forget(self, index: np.ndarray) -> None:
        index = np.asarray(index, dtype=np.int64)
        self.last_time[index] = np.nan
        self.rate[index] = 0.0
