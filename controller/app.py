"""The os-ken application: OpenFlow 1.5 glue around ControllerCore.

Discovery: our own LLDP probes on every port (switch features -> port description -> probe), links
reconciled with the topology file by datapath id (mismatches logged). Hosts: learnt from ARP and from
the first IPv4 packet (table miss); ARP is answered by the controller (proxy ARP). The LLDP, host and
ARP handlers are in app_discovery.py. Measurement: port and classification-rule counters polled every
interval. Each interval: route, plan, and execute the plan phase by phase with a barrier per phase
(make-before-break across switches).

os-ken 4.2.2 runs on native threads (OSKEN_HUB_TYPE=native): event handlers run on the app's event
thread, the control loop on its own thread; ``self.lock`` serialises their use of the core.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import defaultdict

import numpy as np
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser

from . import ofmsgs
from .app_discovery import DiscoveryHandlers
from .asyncroute import RoutingWorker
from .core import ControllerCore
from .discovery import port_speed_bps
from .ofsend import PlanSender, SendLimits
from .planner import Plan

log = logging.getLogger("tellm.controller")

#: Filled by tellm.controller.runner before os-ken instantiates the app (os-ken builds apps itself).
RUNTIME: dict = {}
#: Realised splits are read from group counters only on networks this small (one group per pair).
GROUP_STATS_MAX_NODES = 60
REFUSED_LOG_SECONDS = 60.0
#: An interval waits for the router at most this fraction of the poll interval (asyncroute.py): a
#: slower routing is applied at a later interval instead of stretching this one.
ROUTER_WAIT_FRACTION = 0.5


def _speed_bps(port) -> float:
    """Speed of an OpenFlow 1.5 port description from its ethernet property (0.0 = unknown)."""
    for prop in getattr(port, "properties", None) or ():
        if isinstance(prop, ofproto_v1_5_parser.OFPPortDescPropEthernet):
            return port_speed_bps(prop.curr_speed, prop.max_speed)
    return 0.0


class TellmController(DiscoveryHandlers, app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_5.OFP_VERSION]

    def __init__(self, *args, core: ControllerCore | None = None, poll_interval_seconds: float | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.core: ControllerCore = core or RUNTIME["core"]
        self.poll = poll_interval_seconds or RUNTIME.get("poll_interval_seconds") or \
            self.core.config.poll_interval_seconds
        self.datapaths: dict[int, object] = {}
        self.ports: dict[int, dict[int, str]] = defaultdict(dict)  # dpid -> port -> hw_addr
        self.lock = threading.RLock()
        self._barriers: dict[tuple[int, int], threading.Event] = {}
        self._stop = threading.Event()
        self._force = threading.Event()  # reroute at the next tick (new links, reconnects)
        self._wake = threading.Event()  # wake the control loop early (failover, resync)
        self._failover_pending = False
        self._resync: set[int] = set()  # switches to wipe and reinstall (connect, error)
        self._builder: threading.Thread | None = None  # discovery: computing candidate paths
        self._built: tuple | None = None  # discovery: (DiscoveredTopology, PathSet) ready to install
        self._threads: list = []
        self._refused_logged: dict[int, float] = {}  # dpid -> when its refusal was last logged
        cfg = self.core.config
        self.router_worker = RoutingWorker(self.core.router)
        self._messages_sent = 0  # OpenFlow update messages sent so far (per-interval counts in core.intervals)
        self._interval_start: float | None = None  # perf_counter at the control loop's interval start
        self.sender = PlanSender(self._send_barrier, SendLimits(cfg.of_window_messages,
                                                                cfg.of_max_messages_per_second))

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        t = super().start()
        self._threads = [hub.spawn(self._control_loop), hub.spawn(self._lldp_loop)]
        return t

    def stop(self):
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        super().stop()

    # ------------------------------------------------------------------ switches
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev):
        dp = ev.msg.datapath
        dpid = dp.id if dp.id is not None else ev.msg.datapath_id  # os-ken's handler may not have set it yet
        if not self.core.accepts_switch(dpid):
            self._refuse(dp, dpid)
            return
        with self.lock:
            self.datapaths[dp.id] = dp
            self._resync.add(dp.id)
        log.info("switch dpid=%d connected", dp.id)
        self._wake.set()

    def _refuse(self, dp, dpid: int) -> None:
        """Close the connection of a switch the topology file does not declare (it reconnects and is
        refused again; logged at most once per REFUSED_LOG_SECONDS per dpid)."""
        now = time.monotonic()
        if now - self._refused_logged.get(dpid, -REFUSED_LOG_SECONDS) >= REFUSED_LOG_SECONDS:
            self._refused_logged[dpid] = now
            log.warning("refused switch dpid=%d from %s: not declared in the topology file", dpid,
                        getattr(dp, "address", "?"))
        dp.close()
        try:
            dp.socket.shutdown(socket.SHUT_RDWR)  # also stop reading: a peer that never closes is cut off
        except OSError:
            pass

    def _reset_switch(self, dp):
        """Known state on (re)connect: wipe, fixed rules, host rules; the plan reinstalls TE state."""
        for msg in ofmsgs.wipe(dp) + ofmsgs.base_flows(dp, dp.id):
            dp.send_msg(msg)
        for h in self.core.hosts.values():
            if h.dpid == dp.id:
                dp.send_msg(ofmsgs.host_flow(dp, h.ip, h.port))
        dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _dead(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        with self.lock:
            if self.datapaths.get(dp.id) is dp:
                del self.datapaths[dp.id]
                self.core.switch_disconnected(dp.id)
                log.warning("switch dpid=%d disconnected", dp.id)
                self._request_failover()

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _port_desc(self, ev):
        dp = ev.msg.datapath
        ofp = dp.ofproto
        with self.lock:
            for p in ev.msg.body:
                if p.port_no > ofp.OFPP_MAX:
                    continue
                self.ports[dp.id][p.port_no] = p.hw_addr
                down = bool(p.state & ofp.OFPPS_LINK_DOWN) or bool(p.config & ofp.OFPPC_PORT_DOWN)
                self.core.port_state(dp.id, p.port_no, up=not down)
                self.core.port_speed(dp.id, p.port_no, _speed_bps(p))
        # This switch's LLDP rule is in place now (the switch answers in order): probe from every
        # switch so that links towards it are found at once, not at the next periodic probe.
        for other in list(self.datapaths.values()):
            self._send_lldp(other)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev):
        msg = ev.msg
        dp, ofp, p = msg.datapath, msg.datapath.ofproto, msg.desc
        down = (msg.reason == ofp.OFPPR_DELETE or bool(p.state & ofp.OFPPS_LINK_DOWN)
                or bool(p.config & ofp.OFPPC_PORT_DOWN))
        with self.lock:
            if msg.reason == ofp.OFPPR_DELETE:
                self.ports[dp.id].pop(p.port_no, None)
            elif p.port_no <= ofp.OFPP_MAX:
                self.ports[dp.id][p.port_no] = p.hw_addr
                self.core.port_speed(dp.id, p.port_no, _speed_bps(p))
            changed = self.core.port_state(dp.id, p.port_no, up=not down)
            if changed:
                log.warning("dpid=%d port %d is %s", dp.id, p.port_no, "down" if down else "up")
                if down:
                    self._request_failover()  # now, not at the next poll
                else:
                    self._force.set()
        if not down:
            self._send_lldp(dp, [p.port_no])

    def _request_failover(self):
        """Called under self.lock from event handlers; the control loop thread does the work (it is
        the only thread that plans and executes, so plans never interleave and barrier replies, which
        arrive on the event thread, are never waited for on that thread)."""
        self._failover_pending = True
        self._force.set()
        self._wake.set()

    def _failover(self, defer_deletes: bool = False):
        with self.lock:
            self._failover_pending = False
            plan = self.core.failover_plan()
        if plan is not None and plan.phases:
            log.warning("link state changed: renormalising the installed split locally")
            self._execute(plan, defer_deletes)
            with self.lock:
                self.core.commit(plan)
                self.core.snapshot = self.core.make_snapshot()

    # ------------------------------------------------------------------ measurement
    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def _port_stats(self, ev):
        now = time.monotonic()
        body = ev.msg.body
        with self.lock:
            self.core.port_stats(ev.msg.datapath.id, np.array([s.port_no for s in body], dtype=np.int64),
                                 np.array([s.tx_bytes for s in body], dtype=np.uint64), now)

    @set_ev_cls(ofp_event.EventOFPFlowDescStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev):
        now = time.monotonic()
        rows = [(s.cookie & 0xFFFFFFFF, s.stats["byte_count"]) for s in ev.msg.body
                if s.cookie & ofmsgs.COOKIE_MASK == ofmsgs.COOKIE_CLASS]
        if not rows:
            return
        dests, counts = zip(*rows)
        with self.lock:
            self.core.class_stats(ev.msg.datapath.id, np.array(dests, dtype=np.int64),
                                  np.array(counts, dtype=np.uint64), now)

    @set_ev_cls(ofp_event.EventOFPGroupStatsReply, MAIN_DISPATCHER)
    def _group_stats(self, ev):
        now = time.monotonic()
        dpid = ev.msg.datapath.id
        with self.lock:
            for g in ev.msg.body:
                self.core.group_stats(dpid, g.group_id, np.array([b.byte_count for b in g.bucket_stats],
                                                                 dtype=np.uint64), now)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier(self, ev):
        log.debug("barrier reply dpid=%d xid=%d", ev.msg.datapath.id, ev.msg.xid)
        e = self._barriers.pop((ev.msg.datapath.id, ev.msg.xid), None)
        if e is not None:
            e.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev):
        msg = ev.msg
        data = bytes(msg.data or b"")
        # The first bytes of the rejected message: its OpenFlow type (and multipart type) say which.
        what = f"msg type {data[1]}" if len(data) > 1 else "?"
        if len(data) >= 10 and data[1] == 18:
            what += f" multipart {int.from_bytes(data[8:10], 'big')}"
        dp = msg.datapath
        if len(data) < 2 or data[1] not in (14, 15):  # only a rejected flow or group mod desyncs the switch
            log.error("switch dpid=%d rejected a message (%s): error type=%d code=%d",
                      dp.id, what, msg.type, msg.code)
            return
        log.error("switch dpid=%d rejected a message (%s): error type=%d code=%d (xid %d); resynchronising it",
                  dp.id, what, msg.type, msg.code, msg.xid)
        with self.lock:
            if self.datapaths.get(dp.id) is dp:
                self._resync.add(dp.id)
        self._wake.set()

    # ------------------------------------------------------------------ control loop
    def _control_loop(self):
        next_tick = time.monotonic()
        last_start: float | None = None
        while not self._stop.is_set():
            try:
                self._do_resync()
                if self._failover_pending:
                    self._failover(defer_deletes=True)
                if self._built is not None:  # discovery: new paths are ready; install and route now
                    next_tick = min(next_tick, time.monotonic())
                if self.sender.pending_deletes:  # old state of the last plan, once its drain has passed
                    self._flush_deletes()
                if time.monotonic() >= next_tick:
                    start, sent_before = time.monotonic(), self._messages_sent
                    self._interval_start = time.perf_counter()
                    self._request_stats()
                    # Replies arrive on the event thread; give them a fraction of the interval.
                    if self._stop.wait(min(0.25, self.poll / 4)):
                        break
                    self._do_resync()
                    self._discover()
                    self.tick(defer_deletes=True)
                    end = time.monotonic()
                    with self.lock:
                        over = self.core.intervals.add(None if last_start is None else start - last_start, end - start,
                                                       self._messages_sent - sent_before, self.poll)
                    if over:
                        self.core.metrics.interval_overruns.inc()
                    last_start = start
                    next_tick = max(next_tick + self.poll, end)
            except Exception:
                log.exception("control loop iteration failed; keeping the installed routing")
                next_tick = time.monotonic() + self.poll
            due = self.sender.deletes_due
            self._wake.wait(max(0.0, min(next_tick, due if due is not None else next_tick) - time.monotonic()))
            self._wake.clear()

    def _request_stats(self):
        for dp in list(self.datapaths.values()):
            try:
                dp.send_msg(ofmsgs.port_stats_request(dp))
                dp.send_msg(ofmsgs.class_stats_request(dp))
                if self.core.topo is not None and self.core.topo.num_nodes <= GROUP_STATS_MAX_NODES:
                    dp.send_msg(ofmsgs.group_stats_request(dp))
            except Exception as exc:  # a switch that just went away
                log.debug("stats request to dpid=%s failed: %s", dp.id, exc)

    def _do_resync(self):
        with self.lock:
            todo, self._resync = self._resync, set()
            for dpid in todo:
                dp = self.datapaths.get(dpid)
                if dp is not None and self.core.switch_connected(dpid):
                    self._reset_switch(dp)
                    self._force.set()

    def tick(self, defer_deletes: bool = False) -> Plan | None:
        """One control interval: estimate, route, plan, execute (called on the control loop thread, which
        defers the rounds that delete old state: see _execute)."""
        t0 = time.perf_counter()
        now = time.time()
        force = self._force.is_set()
        self._force.clear()
        with self.lock:
            inp = self.core.routing_input(time.monotonic(), force=force)
        plan = None
        core, worker, m = self.core, self.router_worker, self.core.metrics
        if inp is not None and self.datapaths and not worker.submit(inp):
            core.router_busy_intervals += 1  # the router still works on an earlier input: not duplicated
            m.router_busy_intervals.inc()
        # Outside the lock: a model call may take a while, and it may be applied at a later interval.
        # The wait counts from the interval's start (its counter wait included), so that waiting for a
        # slow router never pushes the interval's work past the poll interval by itself.
        start = self._interval_start if self._interval_start is not None else t0
        done = worker.take(max(0.0, ROUTER_WAIT_FRACTION * self.poll - (time.perf_counter() - start)))
        core.routing_fresh = False
        if done is not None:
            with self.lock:
                if core.fits(done.inp):
                    plan = core.apply_routing(done.routing, done.inp, now, done.submitted_monotonic)
                    core.routing_fresh = True
                else:
                    core.routings_discarded += 1
                    m.routings_discarded.inc()
                    log.info("dropped a routing computed for an earlier path set or link state")
            if plan is not None and plan.phases:
                self._execute(plan, defer_deletes)
            if plan is not None:
                with self.lock:
                    core.commit(plan)
        with self.lock:
            core.router_in_flight_seconds = worker.in_flight_seconds()
            age = core.routing_age_seconds()
            if age is not None:
                m.routing_age.set(age)
            core.loops += 1
            core.snapshot = core.make_snapshot()
        m.loop_duration.observe(time.perf_counter() - t0)
        return plan

    def _flush_deletes(self) -> None:
        with self.lock:
            datapaths = dict(self.datapaths)
        report = self.sender.flush(datapaths, self._stop)
        self._messages_sent += report.messages
        self.core.metrics.openflow_messages.inc(report.messages)
        self.core.metrics.openflow_bytes.inc(report.bytes)

    def _send_barrier(self, dp, reply: threading.Event) -> None:
        """A barrier request whose reply (on the event thread, see _barrier) sets ``reply``."""
        barrier = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(barrier)
        self._barriers[(dp.id, barrier.xid)] = reply
        dp.send_msg(barrier)

    def _execute(self, plan: Plan, defer_deletes: bool = False) -> None:
        """Send the plan round by round (ofsend: bulk-encoded, a barrier per chunk and round, per-switch
        window and rate limit); say so when it cannot be, or was not, sent within one interval. With
        ``defer_deletes`` the rounds that delete old state go once their drain has passed (the control
        loop flushes them, and any later plan sends them first), so the drain does not lengthen the
        interval."""
        self.core.plans_started += 1  # readers (GET /state) can tell a network in mid-update
        bound = self.sender.estimate_seconds(plan)
        log.info("update: %d operations in %d phases, %d groups", plan.num_ops, len(plan.steps), plan.group_updates)
        if bound > self.poll:
            log.warning("this interval's plan cannot be sent within the %.3g s poll interval: %d operations need "
                        "at least %.2f s at the limit of %.0f OpenFlow messages/s per switch; routing lags until "
                        "it is installed", self.poll, plan.num_ops, bound, self.sender.limits.max_messages_per_second)
        try:
            with self.lock:
                datapaths = dict(self.datapaths)
            report = self.sender.send(plan, datapaths, self._stop, defer_deletes)
        finally:
            self.core.plans_done += 1
        self._messages_sent += report.messages
        self.core.metrics.openflow_messages.inc(report.messages)
        self.core.metrics.openflow_bytes.inc(report.bytes)
        if report.seconds > self.poll:
            log.warning("sending this interval's plan took %.2f s, longer than the %.3g s poll interval (%d messages, "
                        "%d bytes, %d barrier rounds)", report.seconds, self.poll, report.messages, report.bytes,
                        report.rounds)
