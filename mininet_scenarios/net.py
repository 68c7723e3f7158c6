"""A scenario brought up as a real Mininet network: Open vSwitch bridges on the userspace datapath
(OpenFlow 1.5), TCLinks shaped by HTB, hosts per the addressing contract, plus what tests and the demo
need around it: the machine-wide lock, targeted cleanup, per-link byte counters, link failures.

Mininet is a Debian package: import this module only from Debian's Python (a venv made with
``--system-site-packages``), as root.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from tellm.controller.addressing import host_ip, host_mac, host_subnet_cidr

from .scenarios import Scenario

log = logging.getLogger("tellm.mininet")

#: The machine-wide lock every Open vSwitch/Mininet experiment holds (ovs.sh cleanup takes it too).
LOCK_PATH = "/tmp/tellm-mininet.lock"
OVS_CTL = Path("/usr/share/openvswitch/scripts/ovs-ctl")
#: Host access links are not part of the TE problem; make them fast enough never to bottleneck.
HOST_LINK_MBPS = 100.0


class TestbedError(RuntimeError):
    """The testbed cannot be built or run (not root, Open vSwitch missing, Mininet failure)."""


def mininet_unavailable() -> str | None:
    """Why the Mininet testbed cannot run on this machine (not root, no Open vSwitch, no Mininet), or None."""
    if os.geteuid() != 0:
        return "needs root (Open vSwitch, Mininet)"
    if shutil.which("ovs-vsctl") is None or not OVS_CTL.exists():
        return "Open vSwitch is not installed (Debian package openvswitch-switch)"
    try:
        import mininet.net  # noqa: F401  (Debian package: Debian's python3 only)
    except ImportError:
        return "Mininet is not importable (Debian package mininet; use a venv on /usr/bin/python3)"
    return None


@contextmanager
def mininet_lock(timeout_seconds: float | None = None, on_wait=None):
    """Hold LOCK_PATH (only one OVS/Mininet experiment at a time on a shared machine).
    Python opens it close-on-exec, so daemons started meanwhile do not inherit (and keep) the lock."""
    f = open(LOCK_PATH, "a")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TestbedError(f"{LOCK_PATH} is held by another experiment "
                                           f"(waited {timeout_seconds:.0f} s)") from None
                    time.sleep(0.5)
        yield
    finally:
        f.close()  # releases the lock


def ovs_script() -> Path:
    return Path(str(resources.files("tellm.mininet_scenarios") / "ovs.sh"))


def ensure_ovs() -> None:
    """Start Open vSwitch by hand if it is not running (idempotent)."""
    if os.geteuid() != 0:
        raise TestbedError("the Mininet testbed needs root (Open vSwitch, network namespaces)")
    r = subprocess.run(["bash", str(ovs_script()), "start"], capture_output=True, text=True)
    if r.returncode != 0:
        raise TestbedError(f"cannot start Open vSwitch: {r.stderr.strip() or r.stdout.strip()}")


def _interfaces() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return re.findall(r"^\d+: ([^:@]+)", out, flags=re.M)


def cleanup_leftovers(scenario: Scenario) -> None:
    """Remove what a crashed run of this scenario left behind: its bridges and veths. Targeted on
    purpose: `mn -c` also kills every `ping`/`controller` process and deletes /tmp/*.log machine-wide,
    which is wrong on a shared machine (ovs.sh cleanup still offers it)."""
    names = [scenario.switch_name(i) for i in range(1, len(scenario.switches) + 1)]
    existing = set(subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                                  text=True).stdout.split())
    stale = [b for b in names if b in existing]
    if stale:
        cmd = ["ovs-vsctl", "--timeout=10"]
        for b in stale:
            cmd += ["--", "--if-exists", "del-br", b]
        subprocess.run(cmd, capture_output=True)
    pat = re.compile(rf"^({re.escape(scenario.bridge_prefix)}\d+-eth\d+|h\d+x\d+-eth\d+)$")
    for name in _interfaces():
        if pat.match(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


@dataclass
class Testbed:
    """A running scenario. Build with ``Testbed.start(...)``; always ``stop()`` (or use ``with``)."""

    scenario: Scenario
    net: object  # mininet.net.Mininet
    #: For directed topology link l (tecore order): the switch interface that transmits it.
    link_intf: list[str] = field(default_factory=list)
    #: (u, v) switch names -> (mininet switch u, mininet switch v) for configLinkStatus.
    pair_nodes: dict = field(default_factory=dict)
    #: With static_routes: the switch path (topology names) installed for each (src, dst) switch pair.
    static_paths: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, scenario: Scenario, of_port: int | None = 6653, static_routes: bool = False,
              static_arp: bool = False, host_link_mbps: float = HOST_LINK_MBPS) -> "Testbed":
        """Build and start the network. ``of_port``: the remote controller's port on 127.0.0.1
        (None = no controller). ``static_routes`` installs plain shortest-path IP flows with
        ovs-ofctl (used to test the testbed itself without the tellm controller)."""
        from mininet.link import TCLink
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.node import OVSSwitch, RemoteController

        setLogLevel("critical")  # HTB "quantum is big" warnings are printed as errors
        ensure_ovs()
        cleanup_leftovers(scenario)
        net = Mininet(controller=None, switch=OVSSwitch, link=TCLink, autoSetMacs=False, build=False)
        if of_port is not None:
            net.addController("c0", controller=RemoteController, ip="127.0.0.1", port=of_port)
        sw = {}
        for i, name in enumerate(scenario.switches, start=1):
            sw[name] = net.addSwitch(scenario.switch_name(i), dpid=f"{i:016x}", datapath="user",
                                     protocols="OpenFlow15", failMode="secure")
        for hname, i, j in scenario.hosts():
            h = net.addHost(hname, ip=f"{host_ip(i, j)}/8", mac=host_mac(i, j))
            net.addLink(h, sw[scenario.switches[i - 1]], bw=host_link_mbps)
        tb = cls(scenario, net)
        intf_of: dict[tuple[str, str], str] = {}
        for ln in scenario.links:
            link = net.addLink(sw[ln.src], sw[ln.dst], bw=ln.rate_bps / 1e6)
            intf_of[(ln.src, ln.dst)] = link.intf1.name
            intf_of[(ln.dst, ln.src)] = link.intf2.name
            tb.pair_nodes[frozenset((ln.src, ln.dst))] = (sw[ln.src], sw[ln.dst])
        topo = scenario.topology
        tb.link_intf = [intf_of[(topo.nodes[int(u)], topo.nodes[int(v)])] for u, v in zip(topo.src, topo.dst)]
        try:
            net.build()
            net.start()
            for h in net.hosts:
                # Userspace datapath: TX checksum offload must be off or TCP (and iperf3) fails.
                h.cmd(f"ethtool -K {h.name}-eth0 tx off >/dev/null 2>&1")
                # No IPv6 chatter (router solicitations etc.) in the counters.
                h.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
            if static_arp:
                tb._static_arp()
            if static_routes:
                tb._static_routes()
        except BaseException:
            tb.stop()
            raise
        return tb

    def stop(self) -> None:
        try:
            self.net.stop()
        finally:
            cleanup_leftovers(self.scenario)

    def __enter__(self) -> "Testbed":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ hosts
    def host(self, name: str):
        return self.net.get(name)

    def host_names(self) -> list[str]:
        return [h for h, _, _ in self.scenario.hosts()]

    def _static_arp(self) -> None:
        entries = [(host_ip(i, j), host_mac(i, j)) for _, i, j in self.scenario.hosts()]
        for h in self.net.hosts:
            cmds = "; ".join(f"ip neigh replace {ip} lladdr {mac} dev {h.name}-eth0 nud permanent"
                             for ip, mac in entries if ip != h.IP())
            h.cmd(cmds)

    def _static_routes(self) -> None:
        """Destination-based shortest-path IP forwarding installed with ovs-ofctl (no controller)."""
        import networkx as nx

        sc = self.scenario
        g = nx.Graph()
        g.add_edges_from((ln.src, ln.dst) for ln in sc.links)
        port = {}
        for sname in sc.switches:
            s = self.net.get(sc.switch_name(sc.dpid(sname)))
            for intf in s.intfList():
                if intf.link is None:
                    continue
                other = intf.link.intf2 if intf.link.intf1 is intf else intf.link.intf1
                port[(sname, other.node.name)] = s.ports[intf]
        for src in sc.switches:
            si = sc.dpid(src)
            nxt = nx.single_source_shortest_path(g, src)
            for dst, path in nxt.items():
                if dst != src:
                    self.static_paths[(src, dst)] = list(path)
            flows = []
            for dst in sc.switches:
                di = sc.dpid(dst)
                if dst == src:
                    for _, i, j in sc.hosts():
                        if i == si:
                            flows.append(f"priority=20,ip,nw_dst={host_ip(i, j)},"
                                         f"actions=output:{port[(src, Scenario.host_name(i, j))]}")
                    continue
                hop = nxt[dst][1]
                out = port[(src, sc.switch_name(sc.dpid(hop)))]
                flows.append(f"priority=10,ip,nw_dst={host_subnet_cidr(di)},actions=output:{out}")
            proc = subprocess.run(["ovs-ofctl", "-O", "OpenFlow15", "add-flows", sc.switch_name(si), "-"],
                                  input="\n".join(flows) + "\n", capture_output=True, text=True)
            if proc.returncode != 0:
                raise TestbedError(f"ovs-ofctl add-flows {sc.switch_name(si)}: {proc.stderr.strip()}")

    # ------------------------------------------------------------------ measurement
    def tx_bytes(self) -> np.ndarray:
        """Bytes sent so far on every directed topology link, float64 [L] (tecore link order): the
        kernel counters of the transmitting switch port (after HTB, so only what went on the wire)."""
        out = np.empty(len(self.link_intf))
        for k, name in enumerate(self.link_intf):
            with open(f"/sys/class/net/{name}/statistics/tx_bytes") as f:
                out[k] = float(f.read())
        return out

    # ------------------------------------------------------------------ failures
    def set_link(self, u: str, v: str, up: bool) -> None:
        """Take the link between switches u and v (topology names) down or up, both ends
        (Mininet configLinkStatus: the veths go down, so the switches see port-status events)."""
        try:
            a, b = self.pair_nodes[frozenset((u, v))]
        except KeyError:
            raise TestbedError(f"no link {u}-{v} in scenario {self.scenario.name}") from None
        self.net.configLinkStatus(a.name, b.name, "up" if up else "down")
