"""os-ken glue for discovery and hosts, a mixin of the app (controller/app.py).

LLDP probes out and in (links reported to the core), hosts learnt from ARP and the first IPv4
packet, proxy ARP (unknown targets asked on edge ports only, so broadcasts never loop in a cyclic
topology), and, without a topology file, the discovered network's candidate paths computed on a
worker thread. ``self.lock`` serialises the use of the core with the control loop, as in the app.
"""

from __future__ import annotations

import logging
import threading
import time

from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import arp, ethernet, ipv4, packet
from os_ken.ofproto import ether

from . import ofmsgs
from .addressing import subnet_dpid
from .core import ControllerCore

log = logging.getLogger("tellm.controller")

LLDP_PERIOD_SECONDS = 5.0


class DiscoveryHandlers:
    """LLDP, hosts and ARP, and the discovered topology's path build (mixin of TellmController, which
    sets these fields)."""

    core: ControllerCore
    datapaths: dict[int, object]
    ports: dict[int, dict[int, str]]  # dpid -> port -> hw_addr
    lock: threading.RLock
    _stop: threading.Event
    _force: threading.Event
    _wake: threading.Event
    _builder: threading.Thread | None  # computing candidate paths
    _built: tuple | None  # (DiscoveredTopology, PathSet) ready to install

    def _send_lldp(self, dp, ports=None):
        for port in ports if ports is not None else list(self.ports[dp.id]):
            hw = self.ports[dp.id].get(port)
            if hw is None:
                continue
            dp.send_msg(ofmsgs.packet_out(dp, port, ofmsgs.lldp_frame(dp.id, port, hw)))

    def _probe_fast(self) -> bool:
        with self.lock:  # discovery state is written by the event thread
            return self.core.probe_fast()

    def _lldp_loop(self):
        # Probe fast while declared links are still missing (switches connect one by one), slowly after.
        while not self._stop.wait(1.0 if self._probe_fast() else LLDP_PERIOD_SECONDS):
            for dp in list(self.datapaths.values()):
                self._send_lldp(dp)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        in_port = msg.match.get("in_port")
        pkt = packet.Packet(msg.data)
        eth = pkt.get_protocol(ethernet.ethernet)
        if eth is None or in_port is None or dp.id not in self.datapaths:
            return
        with self.lock:
            if eth.ethertype == ether.ETH_TYPE_LLDP:
                found = ofmsgs.parse_lldp(pkt)
                if found and self.core.link_discovered(found[0], found[1], dp.id, in_port):
                    log.info("link dpid %d port %d -> dpid %d port %d", found[0], found[1], dp.id, in_port)
                    self._force.set()
                return
            if self.core.is_link_port(dp.id, in_port):
                return  # hosts are only learnt at the edge
            a = pkt.get_protocol(arp.arp)
            if a is not None:
                self._learn(a.src_ip, a.src_mac, dp, in_port)
                self._arp(dp, in_port, eth, a, msg.data)
                return
            ip = pkt.get_protocol(ipv4.ipv4)
            if ip is not None:
                self._learn(ip.src, eth.src, dp, in_port)

    def _learn(self, ip: str, mac: str, dp, port: int) -> None:
        if subnet_dpid(ip) is None or ip == "0.0.0.0":
            return
        if self.core.learn_host(ip, mac, dp.id, port):
            log.info("host %s (%s) at dpid %d port %d", ip, mac, dp.id, port)
            dp.send_msg(ofmsgs.host_flow(dp, ip, port))

    def _arp(self, dp, in_port, eth, a, data: bytes) -> None:
        if a.opcode == arp.ARP_REQUEST:
            target = self.core.hosts.get(a.dst_ip)
            if target is not None:  # proxy ARP: answer for the target
                reply = packet.Packet()
                reply.add_protocol(ethernet.ethernet(dst=eth.src, src=target.mac, ethertype=ether.ETH_TYPE_ARP))
                reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=target.mac, src_ip=target.ip,
                                           dst_mac=a.src_mac, dst_ip=a.src_ip))
                reply.serialize()
                dp.send_msg(ofmsgs.packet_out(dp, in_port, bytes(reply.data)))
                return
            # Unknown target: ask on edge ports only (never along inter-switch links).
            for dpid, odp in self.datapaths.items():
                for port in self.ports[dpid]:
                    if (dpid, port) != (dp.id, in_port) and not self.core.is_link_port(dpid, port):
                        odp.send_msg(ofmsgs.packet_out(odp, port, data))
        elif a.opcode == arp.ARP_REPLY:
            asker = self.core.hosts.get(a.dst_ip)
            if asker is not None and asker.dpid in self.datapaths:
                odp = self.datapaths[asker.dpid]
                odp.send_msg(ofmsgs.packet_out(odp, asker.port, data))

    def _discover(self) -> None:
        """Discovery mode: once the discovered network has settled (or changed after that), candidate
        paths are computed on a worker thread (so failover stays immediate meanwhile); when they are
        ready the control loop installs the new topology and reroutes at once; the plan moves the
        switches make-before-break from the old labels and groups to the new ones."""
        with self.lock:
            built, self._built = self._built, None
            if built is not None:
                self.core.install_discovered(*built)
                self._force.set()
            if self._builder is not None and self._builder.is_alive():
                return
            cand = self.core.discovery_poll()
        if cand is not None:
            self._builder = threading.Thread(target=self._build_paths, args=(cand,), name="tellm-paths", daemon=True)
            self._builder.start()

    def _build_paths(self, cand) -> None:
        t0 = time.perf_counter()
        try:
            paths = self.core.discovery.paths_for(cand.topo)
        except Exception:
            log.exception("candidate paths for the discovered topology failed; keeping the installed one")
            return
        log.info("candidate paths for %d switches computed in %.2f s", cand.topo.num_nodes, time.perf_counter() - t0)
        with self.lock:
            self._built = (cand, paths)
        self._wake.set()
