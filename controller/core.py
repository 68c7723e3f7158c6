"""The controller's state machine without os-ken: discovery results, measurements, routing and plans.

The os-ken app (controller/app.py) feeds events in (switch up/down, links, port status, counter
replies, hosts) and executes the Plans that come out. Everything here is plain Python + numpy so it
is tested without switches.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from tecore import PathSet, Topology, link_loads, mlu, shortest_path_split

from .counters import RateEstimator, counter_delta
from .discovery import DiscoveredTopology, TopologyDiscovery
from .failure import mask_split, path_alive
from .groups import _LABEL_BITS, LABEL_ALT_BASE, LABEL_BASE, MAX_LABEL, ForwardingCache, label_space_end
from .metrics import Metrics
from .planner import Installed, Plan, plan_update
from .quantise import DEFAULT_TOTAL_WEIGHT, apply_deadband, quantise_weights, weights_to_split
from .repair import PathRepair, carry_by_label
from .rules import candidate_bound, switch_rules
from .routers import Routing, RoutingInput
from .tm import TMEstimator, relative_change

log = logging.getLogger(__name__)


#: Per-switch OpenFlow flow control defaults: a window of unconfirmed messages and a rate cap. OVS
#: applies a few tens of thousands of flow mods per second; the cap keeps a big plan from queueing
#: more than that in a switch's connection.
DEFAULT_OF_WINDOW_MESSAGES = 4096
DEFAULT_OF_MAX_MESSAGES_PER_SECOND = 50_000.0


@dataclass(frozen=True)
class ControllerConfig:
    poll_interval_seconds: float = 1.0
    #: Reroute when the TM changed by more than this (relative L1); 0 = reroute every interval.
    reroute_threshold: float = 0.0
    ewma_alpha: float = 1.0  # weight of the newest TM measurement (1 = no smoothing)
    history: int = 60  # TM snapshots kept
    total_weight: int = DEFAULT_TOTAL_WEIGHT
    #: Keep a pair's installed weights unless a bucket moves by more than this many units (0 = off).
    weight_deadband: int = 0
    #: OpenFlow messages per switch sent but not yet confirmed by a barrier (ofsend.SendLimits).
    of_window_messages: int = DEFAULT_OF_WINDOW_MESSAGES
    #: OpenFlow messages per second per switch; 0 = no cap.
    of_max_messages_per_second: float = DEFAULT_OF_MAX_MESSAGES_PER_SECOND


@dataclass(frozen=True)
class Host:
    ip: str
    mac: str
    dpid: int
    port: int


@dataclass
class _Discovery:
    link_port: np.ndarray  # int64 [L]: port on the source switch, -1 = not discovered
    link_dst_port: np.ndarray  # int64 [L]
    port_down: set[tuple[int, int]] = field(default_factory=set)
    connected: set[int] = field(default_factory=set)
    undeclared: set[tuple[int, int, int, int]] = field(default_factory=set)


@dataclass(frozen=True)
class _FrozenGroups:
    """What groups_json needs, frozen with a snapshot."""

    topo: Topology
    paths: PathSet
    node_dpid: np.ndarray
    labels: np.ndarray  # int64 [Np]: MPLS label of each path
    origin: np.ndarray  # int64 [Np]: base path index, < 0 for a repair path
    weights: np.ndarray
    alive: np.ndarray
    gid_of: dict
    realised: dict


class ControllerCore:
    """``topo``/``paths``/``node_dpid`` from a topology file; or all None with ``discovery`` set, in which
    case the topology is learnt from the switches and installed later (``install_topology``)."""

    def __init__(self, topo: Topology | None, paths: PathSet | None, node_dpid: dict[str, int] | None, router,
                 metrics: Metrics | None = None, config: ControllerConfig = ControllerConfig(),
                 discovery: TopologyDiscovery | None = None):
        if topo is None and discovery is None:
            raise ValueError("give a topology or enable discovery")
        self.router, self.config, self.discovery = router, config, discovery
        self.metrics = metrics or Metrics()
        self.installed = Installed()
        self.hosts: dict[str, Host] = {}
        self.routing_time: float | None = None
        self.snapshot: dict = {}
        self.loops = 0
        self.plans_started = 0  # plan executions begun / finished (live, for GET /state readers)
        self.plans_done = 0
        self.topo: Topology | None = None
        #: The path set routed and installed: the topology's candidate paths plus repair paths
        #: (controller/repair.py) for pairs whose candidates are all down.
        self.paths: PathSet | None = None
        self.repair: PathRepair | None = None
        self.path_labels = np.zeros(0, dtype=np.int64)
        self.node_dpid = np.zeros(0, dtype=np.int64)
        self.dpid_node: dict[int, int] = {}
        self.link_names: list[str] = []
        self.label_base = LABEL_BASE
        self.disc = _Discovery(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        self._fresh_state(None)
        if topo is not None:
            self.install_topology(topo, paths, node_dpid)

    def install_topology(self, topo: Topology, paths: PathSet, node_dpid: dict[str, int],
                         link_port: np.ndarray | None = None, link_dst_port: np.ndarray | None = None) -> None:
        """(Re)build everything indexed by node, link or path. Kept: switches, port states, hosts and
        what is installed on the switches, so the next plan moves the network make-before-break from
        the old routing to the new one. Measurements restart (rates need two new counter readings)."""
        missing = [n for n in topo.nodes if n not in node_dpid]
        if missing:
            raise ValueError(f"no datapath id for node(s) {missing[:5]} (give 'dpids:' in the topology YAML)")
        dpids = np.array([int(node_dpid[n]) for n in topo.nodes], dtype=np.int64)
        if len(set(dpids.tolist())) != topo.num_nodes:
            raise ValueError("two nodes share a datapath id")
        L = topo.num_links
        ports = [np.full(L, -1, dtype=np.int64) if p is None else np.asarray(p, dtype=np.int64).copy()
                 for p in (link_port, link_dst_port)]
        self.label_base = self._next_label_base(paths)
        self.topo, self.paths, self.node_dpid = topo, paths, dpids
        self.repair = PathRepair(topo, paths, self.label_base, label_space_end(self.label_base))
        self.path_labels = self.repair.labels
        self.dpid_node = {int(d): i for i, d in enumerate(dpids)}
        self.link_names = [topo.link_name(i) for i in range(L)]
        if self.topo is not None:
            self.metrics.forget_links()  # series of links of the replaced topology
        old = self.disc
        self.disc = _Discovery(ports[0], ports[1], old.port_down, old.connected, old.undeclared)
        self._fresh_state(topo)

    def _fresh_state(self, topo: Topology | None) -> None:
        """Measurements and routing of a (new) topology; none of it carries over to another one."""
        self.link_rates = None if topo is None else RateEstimator(topo.num_links, max_rate=topo.capacity_bps / 8 * 4)
        self.tm = None if topo is None else TMEstimator(topo.num_nodes, alpha=self.config.ewma_alpha,
                                                        history=self.config.history)
        self.routing: Routing | None = None
        self.weights: np.ndarray | None = None
        self._routed_tm: np.ndarray | None = None
        self._routed_link_up: np.ndarray | None = None
        #: (dpid, group id) -> (time, bucket byte counters) and -> realised share of each bucket
        self._bucket_bytes: dict[tuple[int, int], tuple[float, np.ndarray]] = {}
        self.realised: dict[tuple[int, int], np.ndarray] = {}
        self._last_stranded = 0
        self._forwarding = ForwardingCache()  # label/group layout of the active paths, reused while it holds
        self._bound: tuple | None = None  # (path set, candidate_bound of it)
        self._rules: tuple | None = None  # (what it was counted for, SwitchRules)
        self._sp: tuple | None = None  # ((path set, link state), shortest-path split)

    def _next_label_base(self, paths: PathSet) -> int:
        """Labels of a new path set: the label space the installed labels do not use, so that old
        groups keep valid labels until the planner deletes them (make-before-break across a rebuild)."""
        installed = self._installed_labels()
        if installed.size == 0 or self.paths is None:
            return LABEL_BASE
        other = LABEL_ALT_BASE if self.label_base == LABEL_BASE else LABEL_BASE
        old_lo, old_hi = int(installed.min()), int(installed.max()) + 1
        new_lo, new_hi = other, other + paths.num_paths
        if (new_hi <= old_lo or old_hi <= new_lo) and new_hi <= MAX_LABEL:
            return other
        log.warning("%d paths do not fit in the spare MPLS label space: labels are reused, packets in flight "
                    "during this update may be misdelivered", paths.num_paths)
        return LABEL_BASE

    def _installed_labels(self) -> np.ndarray:
        return self.installed.state.label_keys & ((1 << _LABEL_BITS) - 1)

    # ------------------------------------------------------------------ repair
    def _refresh_repairs(self, up: np.ndarray) -> None:
        """Link state changed: give stranded pairs repair paths (or drop those no longer needed). The
        routing and weights move to the new path set by label; a new repair path starts at weight 0 and
        its pair, having no other live path, is split over it by the local renormalisation."""
        if self.repair.current(up):  # the steady interval: one comparison
            return
        old_labels = self.path_labels
        u = self.repair.update(up, self._installed_labels())
        self.metrics.stranded_pairs.set(u.stranded.size)
        self.metrics.repaired_pairs.set(self.repair.repaired.size)
        if not u.changed:
            return
        self.paths, self.path_labels = self.repair.paths, self.repair.labels
        if self.routing is not None:
            self.routing = dataclasses.replace(self.routing,
                                               split=carry_by_label(old_labels, self.routing.split, self.path_labels))
        if self.weights is not None:
            self.weights = carry_by_label(old_labels, self.weights, self.path_labels)
        self.repair.log_update(u)

    # ------------------------------------------------------------------ discovery
    def link_up(self) -> np.ndarray:
        """float64 [L]: discovered, both switches connected, neither port down."""
        d = self.disc
        src_dp, dst_dp = self.node_dpid[self.topo.src], self.node_dpid[self.topo.dst]
        conn = np.array([int(x) in d.connected for x in self.node_dpid])
        up = (d.link_port >= 0) & conn[self.topo.src] & conn[self.topo.dst]
        if d.port_down:
            down = np.array([(int(a), int(p)) in d.port_down or (int(b), int(q)) in d.port_down
                             for a, p, b, q in zip(src_dp, d.link_port, dst_dp, d.link_dst_port)])
            up &= ~down
        return up.astype(np.float64)

    def accepts_switch(self, dpid: int) -> bool:
        """In the topology file, or any switch when discovering."""
        return dpid in self.dpid_node or self.discovery is not None

    def switch_connected(self, dpid: int) -> bool:
        """A switch (re)connected; its state will be reinstalled. False if it is not in the topology."""
        if not self.accepts_switch(dpid):
            log.warning("switch dpid=%d is not in the topology; ignoring it", dpid)
            return False
        if self.discovery is not None:
            self.discovery.net.add_switch(dpid)
        self.disc.connected.add(dpid)
        self.installed.forget_switch(dpid)
        n = self.dpid_node.get(dpid)
        if n is not None:
            self.tm.forget(np.full(self.topo.num_nodes, n), np.arange(self.topo.num_nodes))
            self.link_rates.forget(np.flatnonzero(self.topo.src == n))
        self.disc.port_down = {k for k in self.disc.port_down if k[0] != dpid}
        return True

    def switch_disconnected(self, dpid: int) -> None:
        self.disc.connected.discard(dpid)
        self.installed.forget_switch(dpid)

    def link_discovered(self, src_dpid: int, src_port: int, dst_dpid: int, dst_port: int) -> bool:
        """An LLDP probe sent on (src_dpid, src_port) came in at (dst_dpid, dst_port). True if new."""
        u, v = self.dpid_node.get(src_dpid), self.dpid_node.get(dst_dpid)
        lid = self.topo.link_index.get((u, v)) if u is not None and v is not None else None
        if self.discovery is not None:
            return self._link_observed(lid, src_dpid, src_port, dst_dpid, dst_port)
        if lid is None:
            key = (src_dpid, src_port, dst_dpid, dst_port)
            if key not in self.disc.undeclared:
                log.warning("discovered link dpid %d port %d -> dpid %d port %d is not in the topology file; "
                            "not using it", *key)
                self.disc.undeclared.add(key)
            return False
        old = (int(self.disc.link_port[lid]), int(self.disc.link_dst_port[lid]))
        if old == (src_port, dst_port):
            return False
        if old[0] >= 0:
            log.warning("link %s moved from ports %s to %s", self.link_names[lid], old, (src_port, dst_port))
        self.disc.link_port[lid], self.disc.link_dst_port[lid] = src_port, dst_port
        self.link_rates.forget(np.array([lid]))
        return True

    def _link_observed(self, lid: int | None, src_dpid: int, src_port: int, dst_dpid: int, dst_port: int) -> bool:
        """Discovery mode: every probe is an observation. A link of the installed topology comes up
        when a probe crosses its wire; anything else (a new link, another wire between two linked
        switches, a recabled port) changes the candidate topology and waits for the settled rebuild."""
        new = self.discovery.net.add_link(src_dpid, src_port, dst_dpid, dst_port)
        built = self.discovery.installed
        if lid is None or built is None or (src_port, dst_port) != (int(built.wire_src_port[lid]),
                                                                    int(built.wire_dst_port[lid])):
            if new and built is not None:  # while the network is first learnt this is expected (the app logs it)
                log.warning("discovered link dpid %d port %d -> dpid %d port %d; the topology is rebuilt once "
                            "discovery settles", src_dpid, src_port, dst_dpid, dst_port)
            return new
        if int(self.disc.link_port[lid]) == src_port:
            return False
        self.disc.link_port[lid], self.disc.link_dst_port[lid] = src_port, dst_port
        self.link_rates.forget(np.array([lid]))
        return True

    def port_speed(self, dpid: int, port: int, speed_bps: float) -> None:
        """A port's speed from its description (0 = unknown); discovered links take their capacity from it."""
        if self.discovery is not None:
            self.discovery.net.set_port_speed(dpid, port, speed_bps)

    def discovery_poll(self) -> DiscoveredTopology | None:
        """Once per interval in discovery mode: a settled, changed topology to build paths for, else None."""
        return None if self.discovery is None else self.discovery.poll()

    def install_discovered(self, built: DiscoveredTopology, paths: PathSet) -> None:
        change = self.discovery.install(built)
        self.install_topology(built.topo, paths, built.node_dpid, built.link_port, built.link_dst_port)
        log.warning("discovered topology installed: %d switches, %d links, %d candidate paths (%s)",
                    built.topo.num_nodes, built.topo.num_links, paths.num_paths, change.describe())
        if built.defaulted:
            log.warning("no port speed for %d link(s) (e.g. %s): their capacity is the default %.3g bit/s",
                        len(built.defaulted), built.defaulted[0], self.discovery.default_capacity_bps)
        if built.one_way:
            log.warning("%d link(s) not yet crossed by LLDP although their reverse was (e.g. %s): down until a "
                        "probe crosses them", len(built.one_way), built.one_way[0])
        if built.left_out:
            log.warning("switch(es) %s are not linked to the rest of the network; not routed yet",
                        list(built.left_out)[:8])
        if built.parallel:
            log.warning("%d extra wire(s) between already linked switches are not used (e.g. %s)",
                        len(built.parallel), built.parallel[0])

    def port_state(self, dpid: int, port: int, up: bool) -> bool:
        """Port status from a switch. True if it changed the state of a link."""
        key = (dpid, port)
        was_down = key in self.disc.port_down
        if up:
            self.disc.port_down.discard(key)
        else:
            self.disc.port_down.add(key)
        return was_down == up and self.is_link_port(dpid, port)

    def is_link_port(self, dpid: int, port: int) -> bool:
        if self.discovery is not None and self.discovery.net.is_link_port(dpid, port):
            return True
        n = self.dpid_node.get(dpid)
        if n is None:
            return False
        d = self.disc
        return bool(np.any((self.topo.src == n) & (d.link_port == port)) or
                    np.any((self.topo.dst == n) & (d.link_dst_port == port)))

    def probe_fast(self) -> bool:
        """LLDP probes go out every second while links are missing or discovery has not settled."""
        return bool(self.missing_links()) or (self.discovery is not None and not self.discovery.settled)

    def missing_links(self) -> list[str]:
        return [self.link_names[i] for i in np.flatnonzero(self.disc.link_port < 0)]

    # ------------------------------------------------------------------ hosts
    def learn_host(self, ip: str, mac: str, dpid: int, port: int) -> bool:
        """True when the host is new or moved (its delivery flow must be (re)installed)."""
        if dpid not in self.dpid_node and not (self.discovery is not None and dpid in self.disc.connected):
            return False
        if self.is_link_port(dpid, port):
            return False
        h = Host(ip, mac, dpid, port)
        if self.hosts.get(ip) == h:
            return False
        self.hosts[ip] = h
        return True

    # ------------------------------------------------------------------ measurement
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

    # ------------------------------------------------------------------ control
    def pair_demand_bps(self, tm: np.ndarray) -> np.ndarray:
        return tm[self.paths.pairs[:, 0], self.paths.pairs[:, 1]]

    def routing_input(self, now: float, force: bool = False) -> RoutingInput | None:
        """The router's input for this interval, or None when the last routing still holds (or there
        is no topology yet)."""
        if self.topo is None:
            return None
        tm = self.tm.snapshot(now).demand_bps
        up = self.link_up()
        self._refresh_repairs(up)
        self._update_measurements(tm)
        changed = (self.routing is None or force or self._routed_link_up is None
                   or not np.array_equal(up, self._routed_link_up)
                   or relative_change(self._routed_tm, tm) > self.config.reroute_threshold
                   or self.config.reroute_threshold <= 0)
        if not changed:
            return None
        return RoutingInput(self.topo, self.paths, self.pair_demand_bps(tm), up)

    def apply_routing(self, routing: Routing, inp: RoutingInput, now: float) -> Plan:
        """Accept a routing and plan the switch updates that realise it."""
        self.routing, self.routing_time = routing, now
        self._routed_tm = self.tm.matrix()
        self._routed_link_up = inp.link_up.copy()
        self.metrics.set_router(routing.router)
        return self._plan(routing.split, inp.link_up)

    def failover_plan(self) -> Plan | None:
        """Link state changed: renormalise the installed routing locally (no router call)."""
        if self.topo is None:
            return None
        up = self.link_up()
        self._refresh_repairs(up)
        if self.routing is None:
            return None
        return self._plan(self.routing.split, up)

    def _plan(self, split: np.ndarray, link_up: np.ndarray) -> Plan:
        masked = mask_split(self.paths, split, link_up)
        if masked.stranded_pairs.size and masked.stranded_pairs.size != self._last_stranded:
            log.warning("%d pair(s) have no live path and no surviving route (e.g. %s); they get no group",
                        masked.stranded_pairs.size, self._pair_name(int(masked.stranded_pairs[0])))
        self._last_stranded = masked.stranded_pairs.size
        w = quantise_weights(masked.split, self.paths.pair_ptr, self.config.total_weight)
        w[~masked.alive] = 0  # stranded pairs get no group rather than one into a dead link
        w = apply_deadband(w, self.weights, self.paths.pair_ptr, self.config.weight_deadband)
        self.weights = w
        desired = self._forwarding.desired(self.topo, self.paths, w, self.node_dpid, self.disc.link_port,
                                           self.path_labels, np.fromiter(self.disc.connected, dtype=np.int64))
        return plan_update(self.installed, desired)

    def commit(self, plan: Plan) -> None:
        self.installed = plan.after
        self.metrics.group_updates.inc(plan.group_updates)

    # ------------------------------------------------------------------ reporting
    def _pair_name(self, p: int) -> str:
        s, d = self.paths.pairs[p]
        return f"{self.topo.nodes[s]}->{self.topo.nodes[d]}"

    def _update_measurements(self, tm: np.ndarray) -> None:
        up = self.link_up()
        thr = self.link_throughput_bps()
        util = thr / self.topo.capacity_bps
        m = self.metrics
        m.set_links(self.link_names, util, thr)
        m.mlu.set(float(np.max(util, initial=0.0)))
        m.tm_total.set(float(tm.sum()))
        demand = self.pair_demand_bps(tm)
        m.shortest_path_mlu.set(mlu(self.topo, link_loads(self.paths, self._shortest_path_split(up), demand)))

    def _shortest_path_split(self, up: np.ndarray) -> np.ndarray:
        """The counterfactual shortest-path split under a link state (recomputed when that changes)."""
        key = (self.paths, up.tobytes())
        if self._sp is None or self._sp[0][0] is not key[0] or self._sp[0][1] != key[1]:
            self._sp = (key, shortest_path_split(self.topo, self.paths, self.topo.weight + 1e9 * (up <= 0.5)))
        return self._sp[1]

    def make_snapshot(self) -> dict:
        """What GET /state serves (see state_json), frozen at the end of an interval."""
        snap = {
            "topology": {"name": None, "nodes": [], "dpids": [], "links": [],
                         "connected_switches": sorted(self.disc.connected),
                         "undeclared_links": [list(k) for k in sorted(self.disc.undeclared)]},
            "discovery": self._discovery_json(),
            "hosts": [{"ip": h.ip, "mac": h.mac, "dpid": h.dpid, "port": h.port} for h in self.hosts.values()],
            "traffic_matrix_bps": [], "traffic_matrix_total_bps": 0.0, "mlu": 0.0, "predicted_mlu": None,
            "shortest_path_mlu": None, "link_utilization": {}, "link_throughput_bps": {},
            "router": None, "router_configured": getattr(self.router, "name", str(self.router)),
            "last_routing_time": self.routing_time, "routing_seconds": None, "loops": self.loops,
            "_groups": None,  # expanded by state_json
            "time": time.time(),
        }
        if self.topo is None:  # discovery has not settled yet
            return snap
        topo, up = self.topo, self.link_up()
        thr = self.link_throughput_bps()
        util = thr / topo.capacity_bps
        tm = self.tm.matrix()
        # Per-pair groups are expanded only when someone reads them (state_json): building dicts for
        # every path of a large network each interval would dominate the control loop. The topology
        # and paths are frozen with them (a discovered topology may be replaced meanwhile).
        inst = self.installed
        gid_of = dict(zip(inst.state.group_keys.tolist(), inst.group_ids.tolist()))
        frozen = None if self.weights is None else _FrozenGroups(
            topo, self.paths, self.node_dpid, self.path_labels, self.repair.origin, self.weights,
            path_alive(self.paths, up), gid_of, dict(self.realised))
        r = self.routing
        demand = self.pair_demand_bps(tm)
        sp = self._shortest_path_split(up)
        snap["topology"].update({
            "name": topo.name, "nodes": list(topo.nodes), "dpids": [int(x) for x in self.node_dpid],
            "links": [{"id": i, "name": self.link_names[i], "src": topo.nodes[topo.src[i]],
                       "dst": topo.nodes[topo.dst[i]], "capacity_bps": float(topo.capacity_bps[i]),
                       "port": int(self.disc.link_port[i]), "up": bool(up[i])} for i in range(topo.num_links)]})
        snap.update({
            "traffic_matrix_bps": tm.tolist(),
            "traffic_matrix_total_bps": float(tm.sum()),
            "mlu": float(np.max(util, initial=0.0)),
            "predicted_mlu": None if r is None else float(r.predicted_mlu),
            "shortest_path_mlu": mlu(topo, link_loads(self.paths, sp, demand)),
            "link_utilization": dict(zip(self.link_names, util.tolist())),
            "link_throughput_bps": dict(zip(self.link_names, thr.tolist())),
            "router": None if r is None else r.router,
            "routing_seconds": None if r is None else r.seconds,
            "repair": self.repair.state_json(),
            "forwarding": self.forwarding_json(),
            "_groups": frozen,
        })
        return snap

    def forwarding_json(self) -> dict:
        """Flow rules and groups per switch, installed and bound (controller/rules.py); sets the metrics."""
        if self._bound is None or self._bound[0] is not self.paths:
            self._bound = (self.paths, candidate_bound(self.topo, self.paths))
        hosts = np.array(sorted(h.dpid for h in self.hosts.values()), dtype=np.int64)
        key = (self.installed.state, self._bound[1], hosts.tobytes())
        if self._rules is None or any(a is not b for a, b in zip(key[:2], self._rules[0][:2])) \
                or key[2] != self._rules[0][2]:
            self._rules = (key, switch_rules(self.installed.state, self.node_dpid, hosts, self._bound[1]))
        r = self._rules[1]
        self.metrics.switch_rules_max.set(int(r.rules.max(initial=0)))
        self.metrics.switch_rules_bound.set(int(r.bound.max(initial=0)))
        return {**r.json(self.node_dpid), "active_paths": int(np.count_nonzero(self.weights))
                if self.weights is not None else 0, "candidate_paths": self.paths.num_paths}

    def _discovery_json(self) -> dict:
        d = self.discovery
        if d is None:
            return {"mode": "file"}
        built = d.installed
        return {
            "mode": "discovered", "settled": d.settled, "settle_polls": d.settle_polls,
            "switches": sorted(d.net.switches),
            "lldp_links": [[a, p, b, q] for (a, p), (b, q) in sorted(d.net.links.items())],
            "default_capacity_bps": d.default_capacity_bps,
            "default_capacity_links": [] if built is None else list(built.defaulted),
            "one_way_links": [] if built is None else built.one_way,
            "unlinked_switches": [] if built is None else list(built.left_out),
            "topology_key": None if built is None else built.key,
            "label_base": self.label_base,
        }

    @staticmethod
    def groups_json(frozen: _FrozenGroups | None) -> dict:
        """{"s->d": [{path, label, repair, weight, split, alive, realised}]} for the weights of one snapshot.

        ``realised``: the share of the bucket's bytes in the last polling interval, read from the
        switch's group counters (None when the path has no bucket or the group carried nothing)."""
        if frozen is None:
            return {}
        topo, paths, node_dpid, weights, alive = frozen.topo, frozen.paths, frozen.node_dpid, frozen.weights, frozen.alive
        split = weights_to_split(weights, paths.pair_ptr)
        out = {}
        for p in range(paths.num_pairs):
            a, b = paths.pair_ptr[p], paths.pair_ptr[p + 1]
            s, d = paths.pairs[p]
            s_dp, d_dp = int(node_dpid[s]), int(node_dpid[d])
            gid = frozen.gid_of.get((s_dp << 32) | d_dp)
            shares = frozen.realised.get((s_dp, gid)) if gid is not None else None
            active = [j for j in range(a, b) if weights[j] > 0]
            if shares is not None and len(shares) != len(active):
                shares = None  # counters of an older group layout
            bucket = {j: i for i, j in enumerate(active)}
            out[f"{topo.nodes[s]}->{topo.nodes[d]}"] = [
                {"path": [topo.nodes[n] for n in paths.path_nodes(topo, j)], "label": int(frozen.labels[j]),
                 "repair": bool(frozen.origin[j] < 0), "weight": int(weights[j]), "split": float(split[j]), "alive": bool(alive[j]),
                 "realised": None if shares is None or j not in bucket else float(shares[bucket[j]])}
                for j in range(a, b)]
        return out

    def state_json(self) -> dict:
        """GET /state: the last published snapshot, its groups, and live plan-execution counters."""
        snap = dict(self.snapshot)
        frozen = snap.pop("_groups", None)
        return {**snap, "groups": self.groups_json(frozen), "plans_started": self.plans_started,
                "plans_done": self.plans_done}
