"""Discovery-only mode: what the switches report, turned into a tecore Topology (pure; no os-ken).

Without a topology file the controller learns the network from the switches themselves:
- switches from their OpenFlow handshake (datapath id);
- port speeds from the OpenFlow 1.5 port description (ethernet property ``curr_speed``, else
  ``max_speed``, in kbit/s; 0 = unknown);
- inter-switch links from its own LLDP probes (sent at one switch port, received at another).

``build_topology`` turns these observations into a Topology: node ``s<dpid>`` per switch (sorted by
dpid), both directions of every wire, capacity = the slower known port speed of the wire's two ends
(or the default when neither end reports one), hop-count weights. Only the largest connected group of
switches is used (candidate paths need every pair reachable); the others wait until a link joins them.
A wire seen by LLDP in one direction only still gives both links; the unseen direction counts as down
until a probe crosses it (as a declared-but-undiscovered link does with a topology file).

``TopologyDiscovery`` decides when to (re)build: once the candidate topology has not changed for
``settle_polls`` control intervals, and again after every later change of switches, wires, ports or
capacities. Link or port *state* (down/up) never changes the candidate: that is the fast failover
path, not a rebuild.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tecore import PathSet, Topology, compute_paths
from tecore.incremental import update_paths
from tecore.paths import cached_paths
from tecore.topology import DEFAULT_LATENCY_SECONDS

log = logging.getLogger(__name__)

#: OpenFlow port speeds are in kbit/s.
BPS_PER_KBPS = 1e3

End = tuple[int, int]  # (dpid, port)


def node_name(dpid: int) -> str:
    return f"s{dpid}"


def port_speed_bps(curr_speed_kbps: int | None, max_speed_kbps: int | None) -> float:
    """The port's speed in bit/s from an OpenFlow 1.5 ethernet port property; 0.0 = unknown."""
    for kbps in (curr_speed_kbps, max_speed_kbps):
        if kbps:
            return float(kbps) * BPS_PER_KBPS
    return 0.0


@dataclass
class DiscoveredNetwork:
    """Raw observations, keyed by datapath id and port (independent of any Topology's indices)."""

    switches: set[int] = field(default_factory=set)
    port_speed_bps: dict[End, float] = field(default_factory=dict)
    #: LLDP: probe sent at (dpid, port) -> received at (dpid, port).
    links: dict[End, End] = field(default_factory=dict)
    #: Bumped whenever an observation changed (a cache key for the candidate topology).
    version: int = 0
    _ends: set[End] = field(default_factory=set, repr=False)
    _ends_version: int = field(default=-1, repr=False)

    def add_switch(self, dpid: int) -> bool:
        if dpid in self.switches:
            return False
        self.switches.add(dpid)
        self.version += 1
        return True

    def set_port_speed(self, dpid: int, port: int, speed_bps: float) -> bool:
        if self.port_speed_bps.get((dpid, port)) == speed_bps:
            return False
        self.port_speed_bps[(dpid, port)] = float(speed_bps)
        self.version += 1
        return True

    def add_link(self, src_dpid: int, src_port: int, dst_dpid: int, dst_port: int) -> bool:
        """True when the probe told something new (a new link, or a port that now leads elsewhere)."""
        if src_dpid == dst_dpid or self.links.get((src_dpid, src_port)) == (dst_dpid, dst_port):
            return False
        self.links[(src_dpid, src_port)] = (dst_dpid, dst_port)
        self.version += 1
        return True

    def is_link_port(self, dpid: int, port: int) -> bool:
        """Either end of a wire LLDP crossed (hosts are never learnt there)."""
        if self._ends_version != self.version:
            self._ends = set(self.links) | set(self.links.values())
            self._ends_version = self.version
        return (dpid, port) in self._ends


@dataclass(frozen=True, eq=False)
class DiscoveredTopology:
    """A Topology built from observations, with the OpenFlow ports of each of its links."""

    topo: Topology
    node_dpid: dict[str, int]
    wire_src_port: np.ndarray  # int64 [L]: port of link l on its source switch
    wire_dst_port: np.ndarray  # int64 [L]: port on its destination switch
    seen: np.ndarray  # bool [L]: an LLDP probe crossed link l in its direction
    defaulted: tuple[str, ...] = ()  # links whose capacity is the default (no port speed known)
    left_out: tuple[int, ...] = ()  # dpids outside the largest connected group of switches
    parallel: tuple[tuple[End, End], ...] = ()  # extra wires between an already linked switch pair

    @property
    def link_port(self) -> np.ndarray:
        """Port on the source switch, -1 where LLDP has not seen this direction (link counts as down)."""
        return np.where(self.seen, self.wire_src_port, -1)

    @property
    def link_dst_port(self) -> np.ndarray:
        return np.where(self.seen, self.wire_dst_port, -1)

    @property
    def key(self) -> str:
        """Identity for change detection: nodes, links, capacities and wire ports (not link state)."""
        h = hashlib.sha256(self.topo.content_hash.encode())
        h.update(np.ascontiguousarray(self.wire_src_port).tobytes())
        h.update(np.ascontiguousarray(self.wire_dst_port).tobytes())
        return h.hexdigest()[:16]

    @property
    def one_way(self) -> list[str]:
        return [self.topo.link_name(i) for i in np.flatnonzero(~self.seen)]


def _wires(net: DiscoveredNetwork) -> tuple[dict[tuple[int, int], tuple[End, End]], list[tuple[End, End]]]:
    """One wire per unordered switch pair: {(a, b): ((a, port), (b, port))} with a < b, and the wires
    left out because the pair already has one with lower port numbers (tecore has no parallel links)."""
    found: dict[tuple[int, int], set[tuple[End, End]]] = {}
    for src, dst in net.links.items():
        if src[0] not in net.switches or dst[0] not in net.switches:
            continue
        a, b = sorted((src, dst))
        found.setdefault((a[0], b[0]), set()).add((a, b))
    chosen, extra = {}, []
    for pair, wires in found.items():
        ordered = sorted(wires, key=lambda w: (w[0][1], w[1][1]))
        chosen[pair] = ordered[0]
        extra.extend(ordered[1:])
    return chosen, sorted(extra)


def _largest_group(dpids: set[int], pairs) -> set[int]:
    """The largest connected group of switches (ties: the one holding the smallest dpid)."""
    parent = {d: d for d in dpids}

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, set[int]] = {}
    for d in dpids:
        groups.setdefault(root(d), set()).add(d)
    return max(groups.values(), key=lambda g: (len(g), -min(g)))


def build_topology(net: DiscoveredNetwork, default_capacity_bps: float,
                   name: str = "discovered") -> DiscoveredTopology | None:
    """The Topology the observations describe, or None while no two switches are linked."""
    if not default_capacity_bps > 0 or not np.isfinite(default_capacity_bps):
        raise ValueError("the default capacity must be a positive number of bit/s")
    wires, parallel = _wires(net)
    if not wires:
        return None
    linked = {d for pair in wires for d in pair}
    group = _largest_group(linked, wires)
    dpids = sorted(group)
    index = {d: i for i, d in enumerate(dpids)}
    rows = []  # (src idx, dst idx, src port, dst port, seen, capacity or nan)
    for (a, b), (ea, eb) in wires.items():
        if a not in group:
            continue
        speeds = [s for s in (net.port_speed_bps.get(ea, 0.0), net.port_speed_bps.get(eb, 0.0)) if s > 0]
        cap = min(speeds) if speeds else np.nan
        rows.append((index[a], index[b], ea[1], eb[1], net.links.get(ea) == eb, cap))
        rows.append((index[b], index[a], eb[1], ea[1], net.links.get(eb) == ea, cap))
    rows.sort()
    src, dst, sport, dport, seen, cap = (np.array(col) for col in zip(*rows))
    defaulted = np.isnan(cap.astype(np.float64))
    L = len(rows)
    nodes = tuple(node_name(d) for d in dpids)
    topo = Topology(name, nodes, src, dst, np.where(defaulted, default_capacity_bps, cap), np.ones(L),
                    np.full(L, DEFAULT_LATENCY_SECONDS))
    return DiscoveredTopology(
        topo, dict(zip(nodes, dpids)), sport.astype(np.int64), dport.astype(np.int64), seen.astype(bool),
        tuple(topo.link_name(i) for i in np.flatnonzero(defaulted)), tuple(sorted(linked - group)),
        tuple(parallel))


@dataclass(frozen=True)
class TopologyChange:
    added_nodes: tuple[str, ...]
    removed_nodes: tuple[str, ...]
    added_links: tuple[str, ...]
    removed_links: tuple[str, ...]
    capacity_changed: tuple[str, ...]

    def describe(self) -> str:
        parts = [f"{what} {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                 for what, items in (("new switches", self.added_nodes), ("switches gone", self.removed_nodes),
                                     ("new links", self.added_links), ("links gone", self.removed_links),
                                     ("capacity changed on", self.capacity_changed)) if items]
        return "; ".join(parts) or "ports changed"


def topology_change(old: DiscoveredTopology | None, new: DiscoveredTopology) -> TopologyChange:
    """What differs between two discovered topologies (for the log; names are s<dpid>)."""
    def links(t: DiscoveredTopology | None) -> dict[str, float]:
        if t is None:
            return {}
        return {t.topo.link_name(i): float(t.topo.capacity_bps[i]) for i in range(t.topo.num_links)}

    old_nodes = set(old.topo.nodes) if old is not None else set()
    a, b = links(old), links(new)
    return TopologyChange(tuple(sorted(set(new.topo.nodes) - old_nodes)), tuple(sorted(old_nodes - set(new.topo.nodes))),
                          tuple(sorted(set(b) - set(a))), tuple(sorted(set(a) - set(b))),
                          tuple(sorted(k for k in set(a) & set(b) if a[k] != b[k])))


def settle_polls(settle_seconds: float, poll_interval_seconds: float) -> int:
    """Control intervals without change that make ``settle_seconds`` (at least one)."""
    if not settle_seconds >= 0 or not np.isfinite(settle_seconds):
        raise ValueError("the discovery settle time must be >= 0 seconds")
    return max(1, int(np.ceil(settle_seconds / poll_interval_seconds - 1e-9)))


class TopologyDiscovery:
    """Observations plus the decision when a (new) topology is to be built and installed."""

    def __init__(self, default_capacity_bps: float, settle_polls: int = 3,
                 paths_for: Callable[[Topology], PathSet] | None = None):
        """``paths_for``: candidate paths of a built topology (default: tecore's default k and strategy,
        in-process: forking path workers from the controller's threads is not safe; after the first,
        built incrementally from the last set, recomputing only the pairs a change touches)."""
        if settle_polls < 1:
            raise ValueError("settle_polls must be >= 1")
        if not default_capacity_bps > 0 or not np.isfinite(default_capacity_bps):
            raise ValueError("the default capacity must be a positive number of bit/s")
        self.net = DiscoveredNetwork()
        self.paths_for = paths_for or self._default_paths
        self._last_paths: tuple[Topology, PathSet] | None = None
        self.default_capacity_bps = float(default_capacity_bps)
        self.settle_polls = settle_polls
        self.installed: DiscoveredTopology | None = None
        self._cached: tuple[int, DiscoveredTopology | None] | None = None
        self._last_key: str | None = None
        self._unchanged = 0
        self._requested: str | None = None

    def _default_paths(self, topo: Topology) -> PathSet:
        """The cached default set of ``topo`` if there is one, else an incremental update of the last
        set built here, else the default set from scratch."""
        ps = cached_paths(topo)
        if ps is None:
            prev = self._last_paths
            ps = compute_paths(topo, workers=1) if prev is None else update_paths(prev[1], prev[0], topo)
        self._last_paths = (topo, ps)
        return ps

    def candidate(self) -> DiscoveredTopology | None:
        """The topology the current observations describe (rebuilt only after a new observation)."""
        if self._cached is None or self._cached[0] != self.net.version:
            self._cached = (self.net.version, build_topology(self.net, self.default_capacity_bps))
        return self._cached[1]

    @property
    def settled(self) -> bool:
        """The candidate has been stable for the settle period and is the installed topology."""
        cand = self.candidate()
        return (cand is not None and self._unchanged >= self.settle_polls and self.installed is not None
                and self.installed.key == cand.key)

    def poll(self) -> DiscoveredTopology | None:
        """Once per control interval: the topology to build now, or None (unchanged, still settling,
        or already being built)."""
        cand = self.candidate()
        key = None if cand is None else cand.key
        if key != self._last_key:
            self._last_key, self._unchanged = key, 0
            return None
        self._unchanged += 1
        if cand is None or self._unchanged < self.settle_polls:
            return None
        if (self.installed is not None and self.installed.key == key) or self._requested == key:
            return None
        self._requested = key
        return cand

    def install(self, built: DiscoveredTopology) -> TopologyChange:
        change = topology_change(self.installed, built)
        self.installed = built
        return change
