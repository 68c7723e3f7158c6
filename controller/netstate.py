"""Network events for ControllerCore: switch connections, LLDP links, port states and speeds, hosts.

What the switches report about the network (via the os-ken app) lands here: it is reconciled with the
topology file, or fed to topology discovery (controller/discovery.py) when there is none. Pure Python +
numpy (no os-ken); ``NetworkEvents`` is a mixin of ControllerCore and uses its topology fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tecore import PathSet, Topology

from .counters import RateEstimator
from .discovery import DiscoveredTopology, TopologyDiscovery
from .planner import Installed
from .tm import TMEstimator

log = logging.getLogger("tellm.controller.core")  # the core's log: these are its messages


@dataclass(frozen=True)
class Host:
    ip: str
    mac: str
    dpid: int
    port: int


@dataclass
class LinkState:
    """What the switches said about each link of the installed topology (and about switches and ports)."""

    link_port: np.ndarray  # int64 [L]: port on the source switch, -1 = not discovered
    link_dst_port: np.ndarray  # int64 [L]
    port_down: set[tuple[int, int]] = field(default_factory=set)
    connected: set[int] = field(default_factory=set)
    undeclared: set[tuple[int, int, int, int]] = field(default_factory=set)


class NetworkEvents:
    """Switch, link, port and host events (mixin of ControllerCore, which sets these fields)."""

    topo: Topology | None
    node_dpid: np.ndarray
    dpid_node: dict[int, int]
    link_names: list[str]
    disc: LinkState
    discovery: TopologyDiscovery | None
    installed: Installed
    hosts: dict[str, Host]
    tm: TMEstimator | None
    link_rates: RateEstimator | None
    install_topology: Callable[..., None]  # ControllerCore's

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
