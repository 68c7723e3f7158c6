"""The controller's state machine without os-ken: discovery results, measurements, routing and plans.

The os-ken app (controller/app.py) feeds events in (switch up/down, links, port status, counter
replies, hosts) and executes the Plans that come out. Everything here is plain Python + numpy so it
is tested without switches.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from tecore import PathSet, Topology, link_loads, mlu, shortest_path_split

from .counters import RateEstimator, counter_delta
from .failure import mask_split, path_alive
from .groups import desired_state
from .metrics import Metrics
from .planner import Installed, Plan, plan_update
from .quantise import DEFAULT_TOTAL_WEIGHT, apply_deadband, quantise_weights, weights_to_split
from .routers import Routing, RoutingInput
from .tm import TMEstimator, relative_change

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Host:
    ip: str
    mac: str
    dpid: int
    port: int


def host_subnet(dpid: int) -> tuple[str, str]:
    """The addressing contract: hosts of switch i live in 10.<i//256>.<i%256>.0/24."""
    return f"10.{dpid // 256}.{dpid % 256}.0", "255.255.255.0"


def subnet_dpid(ip: str) -> int | None:
    parts = ip.split(".")
    if len(parts) != 4 or parts[0] != "10":
        return None
    return int(parts[1]) * 256 + int(parts[2])


@dataclass
class _Discovery:
    link_port: np.ndarray  # int64 [L]: port on the source switch, -1 = not discovered
    link_dst_port: np.ndarray  # int64 [L]
    port_down: set[tuple[int, int]] = field(default_factory=set)
    connected: set[int] = field(default_factory=set)
    undeclared: set[tuple[int, int, int, int]] = field(default_factory=set)


class ControllerCore:
    def __init__(self, topo: Topology, paths: PathSet, node_dpid: dict[str, int], router,
                 metrics: Metrics | None = None, config: ControllerConfig = ControllerConfig()):
        missing = [n for n in topo.nodes if n not in node_dpid]
        if missing:
            raise ValueError(f"no datapath id for node(s) {missing[:5]} (give 'dpids:' in the topology YAML)")
        self.topo, self.paths, self.router, self.config = topo, paths, router, config
        self.metrics = metrics or Metrics()
        self.node_dpid = np.array([int(node_dpid[n]) for n in topo.nodes], dtype=np.int64)
        if len(set(self.node_dpid.tolist())) != topo.num_nodes:
            raise ValueError("two nodes share a datapath id")
        self.dpid_node = {int(d): i for i, d in enumerate(self.node_dpid)}
        L = topo.num_links
        self.link_names = [topo.link_name(i) for i in range(L)]
        self.disc = _Discovery(np.full(L, -1, dtype=np.int64), np.full(L, -1, dtype=np.int64))
        self.link_rates = RateEstimator(L, max_rate=topo.capacity_bps / 8 * 4)
        self.tm = TMEstimator(topo.num_nodes, alpha=config.ewma_alpha, history=config.history)
        self.installed = Installed()
        self.hosts: dict[str, Host] = {}
        self.routing: Routing | None = None
        self.routing_time: float | None = None
        self.weights: np.ndarray | None = None
        self._routed_tm: np.ndarray | None = None
        self._routed_link_up: np.ndarray | None = None
        self.snapshot: dict = {}
        self.loops = 0
        self.plans_started = 0  # plan executions begun / finished (live, for GET /state readers)
        #: (dpid, group id) -> (time, bucket byte counters) and -> realised share of each bucket
        self._bucket_bytes: dict[tuple[int, int], tuple[float, np.ndarray]] = {}
        self.realised: dict[tuple[int, int], np.ndarray] = {}
        self.plans_done = 0
        self._last_stranded = 0

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

    def switch_connected(self, dpid: int) -> bool:
        """A switch (re)connected; its state will be reinstalled. False if it is not in the topology."""
        if dpid not in self.dpid_node:
            log.warning("switch dpid=%d is not in the topology; ignoring it", dpid)
            return False
        self.disc.connected.add(dpid)
        self.installed.forget_switch(dpid)
        n = self.dpid_node[dpid]
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
        n = self.dpid_node.get(dpid)
        if n is None:
            return False
        d = self.disc
        return bool(np.any((self.topo.src == n) & (d.link_port == port)) or
                    np.any((self.topo.dst == n) & (d.link_dst_port == port)))

    def missing_links(self) -> list[str]:
        return [self.link_names[i] for i in np.flatnonzero(self.disc.link_port < 0)]

    # ------------------------------------------------------------------ hosts
    def learn_host(self, ip: str, mac: str, dpid: int, port: int) -> bool:
        """True when the host is new or moved (its delivery flow must be (re)installed)."""
        if dpid not in self.dpid_node or self.is_link_port(dpid, port):
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
        dests = np.array([self.dpid_node.get(int(d), -1) for d in dest_dpids], dtype=np.int64)
        ok = dests >= 0
        self.tm.update(np.full(int(ok.sum()), s), dests[ok], np.asarray(byte_count, dtype=np.uint64)[ok],
                       time_seconds)

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
        """The router's input for this interval, or None when the last routing still holds."""
        tm = self.tm.snapshot(now).demand_bps
        up = self.link_up()
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
        if self.routing is None:
            return None
        return self._plan(self.routing.split, self.link_up())

    def _plan(self, split: np.ndarray, link_up: np.ndarray) -> Plan:
        masked = mask_split(self.paths, split, link_up)
        if masked.stranded_pairs.size and masked.stranded_pairs.size != self._last_stranded:
            log.warning("%d pair(s) have no live candidate path (e.g. %s)", masked.stranded_pairs.size,
                        self._pair_name(int(masked.stranded_pairs[0])))
        self._last_stranded = masked.stranded_pairs.size
        w = quantise_weights(masked.split, self.paths.pair_ptr, self.config.total_weight)
        w[~masked.alive] = 0  # stranded pairs get no group rather than one into a dead link
        w = apply_deadband(w, self.weights, self.paths.pair_ptr, self.config.weight_deadband)
        self.weights = w
        desired = desired_state(self.topo, self.paths, w, self.node_dpid, self.disc.link_port)
        desired = desired.on_switches(np.fromiter(self.disc.connected, dtype=np.int64))
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
        sp = shortest_path_split(self.topo, self.paths,
                                 self.topo.weight + 1e9 * (up <= 0.5))
        m.shortest_path_mlu.set(mlu(self.topo, link_loads(self.paths, sp, demand)))

    def make_snapshot(self) -> dict:
        """What GET /state serves (see state_json), frozen at the end of an interval."""
        topo, up = self.topo, self.link_up()
        thr = self.link_throughput_bps()
        util = thr / topo.capacity_bps
        tm = self.tm.matrix()
        # Per-pair groups are expanded only when someone reads them (state_json): building dicts for
        # every path of a large network each interval would dominate the control loop.
        inst = self.installed
        gid_of = dict(zip(inst.state.group_keys.tolist(), inst.group_ids.tolist()))
        frozen = None if self.weights is None else (self.weights, path_alive(self.paths, up), gid_of,
                                                     dict(self.realised))
        r = self.routing
        demand = self.pair_demand_bps(tm)
        sp = shortest_path_split(topo, self.paths, topo.weight + 1e9 * (up <= 0.5))
        return {
            "topology": {
                "name": topo.name, "nodes": list(topo.nodes), "dpids": [int(x) for x in self.node_dpid],
                "links": [{"id": i, "name": self.link_names[i], "src": topo.nodes[topo.src[i]],
                           "dst": topo.nodes[topo.dst[i]], "capacity_bps": float(topo.capacity_bps[i]),
                           "port": int(self.disc.link_port[i]), "up": bool(up[i])} for i in range(topo.num_links)],
                "connected_switches": sorted(self.disc.connected),
                "undeclared_links": [list(k) for k in sorted(self.disc.undeclared)],
            },
            "hosts": [{"ip": h.ip, "mac": h.mac, "dpid": h.dpid, "port": h.port} for h in self.hosts.values()],
            "traffic_matrix_bps": tm.tolist(),
            "traffic_matrix_total_bps": float(tm.sum()),
            "mlu": float(np.max(util, initial=0.0)),
            "predicted_mlu": None if r is None else float(r.predicted_mlu),
            "shortest_path_mlu": mlu(topo, link_loads(self.paths, sp, demand)),
            "link_utilization": dict(zip(self.link_names, util.tolist())),
            "link_throughput_bps": dict(zip(self.link_names, thr.tolist())),
            "router": None if r is None else r.router,
            "router_configured": getattr(self.router, "name", str(self.router)),
            "last_routing_time": self.routing_time,
            "routing_seconds": None if r is None else r.seconds,
            "loops": self.loops,
            "_groups": frozen,  # expanded by state_json
            "time": time.time(),
        }

    def groups_json(self, frozen) -> dict:
        """{"s->d": [{path, label, weight, split, alive, realised}]} for the weights of one snapshot.

        ``realised``: the share of the bucket's bytes in the last polling interval, read from the
        switch's group counters (None when the path has no bucket or the group carried nothing)."""
        if frozen is None:
            return {}
        weights, alive, gid_of, realised = frozen
        topo, paths = self.topo, self.paths
        split = weights_to_split(weights, paths.pair_ptr)
        out = {}
        for p in range(paths.num_pairs):
            a, b = paths.pair_ptr[p], paths.pair_ptr[p + 1]
            s_dp, d_dp = int(self.node_dpid[paths.pairs[p, 0]]), int(self.node_dpid[paths.pairs[p, 1]])
            gid = gid_of.get((s_dp << 32) | d_dp)
            shares = realised.get((s_dp, gid)) if gid is not None else None
            active = [j for j in range(a, b) if weights[j] > 0]
            if shares is not None and len(shares) != len(active):
                shares = None  # counters of an older group layout
            bucket = {j: i for i, j in enumerate(active)}
            out[self._pair_name(p)] = [
                {"path": [topo.nodes[n] for n in paths.path_nodes(topo, j)], "label": j + 16,
                 "weight": int(weights[j]), "split": float(split[j]), "alive": bool(alive[j]),
                 "realised": None if shares is None or j not in bucket else float(shares[bucket[j]])}
                for j in range(a, b)]
        return out

    def state_json(self) -> dict:
        """GET /state: the last published snapshot, its groups, and live plan-execution counters."""
        snap = dict(self.snapshot)
        frozen = snap.pop("_groups", None)
        return {**snap, "groups": self.groups_json(frozen), "plans_started": self.plans_started,
                "plans_done": self.plans_done}
