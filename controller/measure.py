"""Measurement ingestion for ControllerCore: port, classification-rule and group counter replies.

Counter replies become link rates (counters.py), traffic-matrix entries (tm.py) and the split each
select group really realises. Pure Python + numpy (no os-ken); ``MeasurementIngest`` is a mixin of
ControllerCore and uses its topology and link-state fields.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tecore import Topology

from .counters import RateEstimator, counter_delta
from .netstate import LinkState
from .tm import TMEstimator


class MeasurementIngest:
    """Counter replies -> rates, TM, realised splits (mixin of ControllerCore, which sets these fields)."""

    topo: Topology | None
    node_dpid: np.ndarray
    dpid_node: dict[int, int]
    disc: LinkState
    tm: TMEstimator | None
    link_rates: RateEstimator | None
    #: (dpid, group id) -> (time, bucket byte counters) and -> realised share of each bucket
    _bucket_bytes: dict[tuple[int, int], tuple[float, np.ndarray]]
    realised: dict[tuple[int, int], np.ndarray]
    link_up: Callable[[], np.ndarray]  # NetworkEvents'

    def port_stats(self, dpid: int, ports: np.ndarray, tx_bytes: np.ndarray, time_seconds: float) -> None:
        n = self.dpid_node.get(dpid)
        if n is None:
            return
        ports = np.asarray(ports, dtype=np.int64)
        out_links = np.flatnonzero((self.topo.src == n) & (self.disc.link_port >= 0))
        if out_links.size == 0 or ports.size == 0:
            return
        # Match each outgoing link's port with the reply's row for it.
        order = np.argsort(ports)
        pos = np.searchsorted(ports[order], self.disc.link_port[out_links])
        pos = np.minimum(pos, ports.size - 1)
        hit = ports[order][pos] == self.disc.link_port[out_links]
        self.link_rates.update(out_links[hit], np.asarray(tx_bytes, dtype=np.uint64)[order][pos[hit]], time_seconds)

    def class_stats(self, dpid: int, dest_dpids: np.ndarray, byte_count: np.ndarray, time_seconds: float) -> None:
        """Byte counters of the ingress classification rules of one switch."""
        s = self.dpid_node.get(dpid)
        if s is None:
            return
        dests = self._nodes_of(np.asarray(dest_dpids, dtype=np.int64))
        ok = dests >= 0
        self.tm.update(np.full(int(ok.sum()), s), dests[ok], np.asarray(byte_count, dtype=np.uint64)[ok],
                       time_seconds)

    def _nodes_of(self, dpids: np.ndarray) -> np.ndarray:
        """Node index of each datapath id, -1 for one not in the topology (vectorised)."""
        order = np.argsort(self.node_dpid)
        srt = self.node_dpid[order]
        pos = np.minimum(np.searchsorted(srt, dpids), max(srt.size - 1, 0))
        return np.where(srt[pos] == dpids, order[pos], -1) if srt.size else np.full(dpids.size, -1)

    def group_stats(self, dpid: int, group_id: int, bucket_bytes: np.ndarray, time_seconds: float) -> None:
        """Per-bucket byte counters of one select group: the split the switch really realises."""
        key = (dpid, group_id)
        cur = np.asarray(bucket_bytes, dtype=np.uint64)
        prev = self._bucket_bytes.get(key)
        self._bucket_bytes[key] = (time_seconds, cur)
        if prev is None or prev[1].shape != cur.shape or time_seconds <= prev[0]:
            return
        delta = counter_delta(prev[1], cur).astype(np.float64)
        total = delta.sum()
        if total > 0:
            self.realised[key] = delta / total

    def link_throughput_bps(self) -> np.ndarray:
        return self.link_rates.rate * 8.0 * self.link_up()
