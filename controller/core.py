"""The controller's state machine without os-ken: discovery results, measurements, routing and plans.

The os-ken app (controller/app.py) feeds events in (switch up/down, links, port status, counter
replies, hosts) and executes the Plans that come out. Everything here is plain Python + numpy so it
is tested without switches.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from tecore import PathSet, Topology, link_loads, mlu, shortest_path_split

from . import stateview
from .counters import RateEstimator
from .discovery import TopologyDiscovery
from .failure import mask_split
from .groups import _LABEL_BITS, LABEL_ALT_BASE, LABEL_BASE, MAX_LABEL, ForwardingCache, label_space_end
from .measure import MeasurementIngest
from .metrics import Metrics
from .netstate import Host, LinkState, NetworkEvents
from .planner import Installed, Plan, plan_update
from .churn import held_pairs, pair_capacity_bps
from .quantise import DEFAULT_TOTAL_WEIGHT, drop_small_paths, quantise_weights, weights_to_split
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
#: Counter readings of one counter closer together than this fraction of the poll interval are not
#: turned into a rate (counters.RateEstimator.min_dt_seconds).
COUNTER_MIN_DT_FRACTION = 0.5
#: Churn control defaults (quantise.deadband_keep, quantise.drop_small_paths). A pair keeps its
#: installed split while at most 5 % of its traffic would change path, and no path carries less than
#: 3 % of a pair: a model's dense split, which moves a little every interval, then rewrites few groups.
DEFAULT_WEIGHT_DEADBAND = 0.1
DEFAULT_MIN_PATH_WEIGHT = 0.03
DEFAULT_DEADBAND_LOAD = 0.005


@dataclass(frozen=True)
class ControllerConfig:
    poll_interval_seconds: float = 1.0
    #: Reroute when the TM changed by more than this (relative L1); 0 = reroute every interval.
    reroute_threshold: float = 0.0
    ewma_alpha: float = 1.0  # weight of the newest TM measurement (1 = no smoothing)
    history: int = 60  # TM snapshots kept
    total_weight: int = DEFAULT_TOTAL_WEIGHT
    #: Keep a pair's installed split while the new one is within this L1 distance of it (0..2; 0 = off).
    weight_deadband: float = DEFAULT_WEIGHT_DEADBAND
    #: ... or while the traffic that would change path is at most this fraction of the smallest link
    #: capacity on the pair's paths (0 = off): noise on small demands rewrites no groups.
    deadband_load: float = DEFAULT_DEADBAND_LOAD
    #: Paths with a smaller share of their pair than this get no bucket (the rest is renormalised).
    min_path_weight: float = DEFAULT_MIN_PATH_WEIGHT
    #: OpenFlow messages per switch sent but not yet confirmed by a barrier (ofsend.SendLimits).
    of_window_messages: int = DEFAULT_OF_WINDOW_MESSAGES
    #: OpenFlow messages per second per switch; 0 = no cap.
    of_max_messages_per_second: float = DEFAULT_OF_MAX_MESSAGES_PER_SECOND


@dataclass
class IntervalStats:
    """The control loop's recent intervals (GET /state ``intervals``): start-to-start period, the work
    inside it (counter wait, routing wait, plan, send) and OpenFlow messages sent, last ``keep`` of each.
    An overrun is an interval whose work took longer than the poll interval."""

    keep: int = 600
    count: int = 0
    overruns: int = 0
    period_seconds: deque = dataclasses.field(default_factory=deque)
    work_seconds: deque = dataclasses.field(default_factory=deque)
    messages: deque = dataclasses.field(default_factory=deque)

    def add(self, period_seconds: float | None, work_seconds: float, messages: int, poll_seconds: float) -> bool:
        """Record one interval; True when it overran."""
        self.count += 1
        over = work_seconds > poll_seconds
        self.overruns += over
        for q, v in ((self.period_seconds, period_seconds), (self.work_seconds, work_seconds),
                     (self.messages, messages)):
            if v is not None:
                q.append(round(v, 4) if isinstance(v, float) else v)
                if len(q) > self.keep:
                    q.popleft()
        return over

    def json(self) -> dict:
        return {"count": self.count, "overruns": self.overruns, "period_seconds": list(self.period_seconds),
                "work_seconds": list(self.work_seconds), "messages": list(self.messages)}


class ControllerCore(NetworkEvents, MeasurementIngest):
    """``topo``/``paths``/``node_dpid`` from a topology file; or all None with ``discovery`` set, in which
    case the topology is learnt from the switches and installed later (``install_topology``).

    Network events (switches, links, ports, hosts) are handled by ``NetworkEvents`` (netstate.py),
    counter replies by ``MeasurementIngest`` (measure.py), the ``GET /state`` view is stateview.py."""

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
        #: Router bookkeeping (the app's routing worker, asyncroute.py, fills these in).
        self.routing_input_monotonic: float | None = None
        self.routing_fresh = False  # the last interval applied a routing computed for it or later
        self.router_in_flight_seconds: float | None = None
        self.router_busy_intervals = 0
        self.routings_discarded = 0
        self.intervals = IntervalStats()
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
        self.disc = LinkState(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
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
        self.disc = LinkState(ports[0], ports[1], old.port_down, old.connected, old.undeclared)
        self._fresh_state(topo)

    def _fresh_state(self, topo: Topology | None) -> None:
        """Measurements and routing of a (new) topology; none of it carries over to another one."""
        min_dt = COUNTER_MIN_DT_FRACTION * self.config.poll_interval_seconds
        self.link_rates = None if topo is None else RateEstimator(topo.num_links, max_rate=topo.capacity_bps / 8 * 4,
                                                                  min_dt_seconds=min_dt)
        self.tm = None if topo is None else TMEstimator(topo.num_nodes, alpha=self.config.ewma_alpha,
                                                        history=self.config.history, min_dt_seconds=min_dt)
        self.routing: Routing | None = None
        self.routing_input_monotonic = None
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
        self._pair_cap: tuple | None = None  # (path set, smallest capacity on each pair's paths)

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

    def fits(self, inp: RoutingInput) -> bool:
        """Whether a routing computed for ``inp`` still applies: same path set and link state now."""
        return self.topo is not None and inp.paths is self.paths and np.array_equal(inp.link_up, self.link_up())

    def apply_routing(self, routing: Routing, inp: RoutingInput, now: float,
                      input_monotonic: float | None = None) -> Plan:
        """Accept a routing and plan the switch updates that realise it. ``input_monotonic``: when its
        input was taken (time.monotonic; default now), for the routing's age."""
        # The deadband holds pairs only against a routing of the same link state: after a link came
        # back (or went) the router's new choice is taken everywhere once, then drift is held again.
        hold = self._routed_link_up is not None and np.array_equal(self._routed_link_up, inp.link_up)
        self.routing, self.routing_time = routing, now
        self.routing_input_monotonic = time.monotonic() if input_monotonic is None else input_monotonic
        self._routed_tm = self.tm.matrix()
        self._routed_link_up = inp.link_up.copy()
        self.metrics.set_router(routing.router)
        return self._plan(routing.split, inp.link_up, inp.demand_bps, hold=hold)

    def failover_plan(self) -> Plan | None:
        """Link state changed: renormalise the installed routing locally (no router call)."""
        if self.topo is None:
            return None
        up = self.link_up()
        self._refresh_repairs(up)
        if self.routing is None:
            return None
        return self._plan(self.routing.split, up)

    def _pair_capacity_bps(self) -> np.ndarray:
        if self._pair_cap is None or self._pair_cap[0] is not self.paths:
            self._pair_cap = (self.paths, pair_capacity_bps(self.topo, self.paths))
        return self._pair_cap[1]

    def _plan(self, split: np.ndarray, link_up: np.ndarray, demand_bps: np.ndarray | None = None,
              hold: bool = True) -> Plan:
        masked = mask_split(self.paths, split, link_up)
        if masked.stranded_pairs.size and masked.stranded_pairs.size != self._last_stranded:
            log.warning("%d pair(s) have no live path and no surviving route (e.g. %s); they get no group",
                        masked.stranded_pairs.size, self._pair_name(int(masked.stranded_pairs[0])))
        self._last_stranded = masked.stranded_pairs.size
        ptr = self.paths.pair_ptr
        w = quantise_weights(drop_small_paths(masked.split, ptr, self.config.min_path_weight), ptr,
                             self.config.total_weight)
        w[~masked.alive] = 0  # stranded pairs get no group rather than one into a dead link
        old = self.weights if hold else None
        # Failures act at once: a pair with installed weight on a path that died is never held back.
        act_now = None if old is None or old.shape != w.shape else \
            np.add.reduceat(np.where(masked.alive, 0, old), ptr[:-1]) > 0
        cfg = self.config
        keep = held_pairs(self.topo, self.paths, w, old, cfg.weight_deadband, act_now, demand_bps,
                          self._pair_capacity_bps(), cfg.deadband_load)
        if keep.any():
            w = np.where(np.repeat(keep, np.diff(ptr)), old, w)
        self.metrics.deadband_pairs.set(int(keep.sum()))
        self.weights = w
        desired = self._forwarding.desired(self.topo, self.paths, w, self.node_dpid, self.disc.link_port,
                                           self.path_labels, np.fromiter(self.disc.connected, dtype=np.int64))
        return plan_update(self.installed, desired)

    def installed_split(self) -> np.ndarray:
        """The split ratios the installed weights realise (what predicted loads are computed from)."""
        return weights_to_split(self.weights, self.paths.pair_ptr)

    def routing_age_seconds(self, now_monotonic: float | None = None) -> float | None:
        if self.routing_input_monotonic is None:
            return None
        return (time.monotonic() if now_monotonic is None else now_monotonic) - self.routing_input_monotonic

    def routing_status(self) -> dict:
        """GET /state ``routing``: how fresh the installed routing is and how the router keeps up."""
        return {"age_seconds": self.routing_age_seconds(), "fresh_this_interval": self.routing_fresh,
                "in_flight_seconds": self.router_in_flight_seconds, "busy_intervals": self.router_busy_intervals,
                "discarded": self.routings_discarded}

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
        m.shortest_path_mlu.set(mlu(self.topo, link_loads(self.paths, self.counterfactual_split(up), demand)))

    def counterfactual_split(self, up: np.ndarray) -> np.ndarray:
        """The counterfactual shortest-path split under a link state (recomputed when that changes)."""
        key = (self.paths, up.tobytes())
        if self._sp is None or self._sp[0][0] is not key[0] or self._sp[0][1] != key[1]:
            self._sp = (key, shortest_path_split(self.topo, self.paths, self.topo.weight + 1e9 * (up <= 0.5)))
        return self._sp[1]

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

    def make_snapshot(self) -> dict:
        """What GET /state serves (see state_json), frozen at the end of an interval."""
        return stateview.make_snapshot(self)

    def state_json(self, groups: bool = True) -> dict:
        """GET /state: the last published snapshot, its groups (unless ``groups`` is False), and live
        plan-execution counters."""
        snap = dict(self.snapshot)
        frozen = snap.pop("_groups", None)
        return {**snap, "groups": stateview.groups_json(frozen) if groups else {}, "plans_started": self.plans_started,
                "plans_done": self.plans_done, "intervals": self.intervals.json()}
