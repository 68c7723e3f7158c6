"""A small Mininet network for the controller's integration test (4-switch diamond, hosts per the
addressing contract) and helpers to read Open vSwitch state back with ovs-ofctl."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import yaml

LOCK_FILE = "/tmp/tellm-mininet.lock"
ROOT = Path(__file__).resolve().parents[1]

# name -> (dpid); links with capacities (bit/s). Path s1-s2-s4 is 3x the capacity of s1-s3-s4, so the
# min-MLU split of s1 -> s4 traffic is exactly 0.75 / 0.25.
SWITCHES = ["cs1", "cs2", "cs3", "cs4"]
LINKS = [("cs1", "cs2", 30e6), ("cs1", "cs3", 10e6), ("cs2", "cs4", 30e6), ("cs3", "cs4", 10e6)]
HOSTS_PER_SWITCH = 2


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (Mininet)"
    if shutil.which("ovs-vsctl") is None or not Path("/usr/share/openvswitch/scripts/ovs-ctl").exists():
        return "Open vSwitch is not installed"
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "Mininet is not importable (use a venv on Debian's /usr/bin/python3)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ctx:
    """A running controller (subprocess) and its Mininet network; reads GET /state."""

    def __init__(self, router, net, ctl, api_port, metrics_port, log_path):
        self.router = router
        self.net, self.ctl, self.api_port, self.metrics_port, self.log_path = net, ctl, api_port, metrics_port, log_path

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/state", timeout=5) as r:
            return json.load(r)

    def wait(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.state()
            if pred(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last state router={last and last['router']}")


def host_name(i: int, j: int) -> str:
    return f"h{i}x{j}"


def host_ip(i: int, j: int) -> str:
    return f"10.{i // 256}.{i % 256}.{j}"


def host_mac(i: int, j: int) -> str:
    return f"00:00:0a:{i // 256:02x}:{i % 256:02x}:{j:02x}"


def write_topology(path: Path) -> Path:
    doc = {"name": "ctl-diamond", "nodes": SWITCHES,
           "links": [{"src": a, "dst": b, "capacity_bps": c} for a, b, c in LINKS],
           "dpids": {n: i + 1 for i, n in enumerate(SWITCHES)}, "hosts_per_switch": HOSTS_PER_SWITCH}
    path.write_text(yaml.safe_dump(doc))
    return path


@contextmanager
def mininet_lock():
    with open(LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_ovs() -> None:
    subprocess.run([str(ROOT / "mininet_scenarios" / "ovs.sh"), "start"], check=True, capture_output=True)


def stop_network_and_controller(net, ctl, log_file) -> None:
    """Fixture teardown shared by the controller's Mininet tests: stop the network, then the controller
    (SIGTERM, SIGKILL after 10 s), close its log and remove leftover bridges."""
    if net is not None:
        net.stop()
    if ctl.poll() is None:
        ctl.terminate()
        try:
            ctl.wait(10)
        except subprocess.TimeoutExpired:
            ctl.kill()
    log_file.close()
    cleanup_leftovers()


def cleanup_leftovers() -> None:
    """Remove what a crashed run of this network may have left (only our own names; never `mn -c`,
    whose pkill patterns would match unrelated processes)."""
    for s in SWITCHES:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", s], capture_output=True, check=False)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for name in re.findall(r"^\d+: ([^:@]+)", links, flags=re.MULTILINE):
        if re.match(r"^(cs\d+-eth\d+|h\d+x\d+-eth\d+)$", name):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def build(of_port: int):
    from mininet.link import TCLink
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController

    net = Mininet(controller=None, switch=OVSSwitch, link=TCLink, autoSetMacs=False, build=False)
    net.addController("c0", controller=RemoteController, ip="127.0.0.1", port=of_port)
    for i, s in enumerate(SWITCHES, start=1):
        net.addSwitch(s, dpid=f"{i:016x}", datapath="user", protocols="OpenFlow15", failMode="secure")
        for j in range(1, HOSTS_PER_SWITCH + 1):
            h = net.addHost(host_name(i, j), ip=host_ip(i, j) + "/8", mac=host_mac(i, j))
            net.addLink(h, s, bw=100)
    for a, b, cap in LINKS:
        net.addLink(a, b, bw=cap / 1e6)
    net.build()
    return net


def ofctl(*args: str) -> str:
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow15", *args], check=True, capture_output=True,
                          text=True).stdout


def parse_groups(dump: str) -> dict[int, list[dict]]:
    """{group_id: [{"bucket_id", "weight", "label", "port"}]} from `dump-groups`."""
    out = {}
    for line in dump.splitlines():
        m = re.search(r"group_id=(\d+),type=select", line)
        if not m:
            continue
        buckets = []
        for b in re.finditer(r"bucket=bucket_id:(\d+),weight:(\d+),actions=([^ ]*?)(?=,bucket=|$| )", line):
            actions = b.group(3)
            label = re.search(r"set_field:(\d+)->mpls_label", actions)
            port = re.search(r"output:(\d+)", actions)
            buckets.append({"bucket_id": int(b.group(1)), "weight": int(b.group(2)),
                            "label": int(label.group(1)) if label else None,
                            "port": int(port.group(1)) if port else None})
        out[int(m.group(1))] = buckets
    return out


def parse_group_stats(dump: str) -> dict[int, list[int]]:
    """{group_id: [byte_count of each bucket]} from `dump-group-stats`."""
    out = {}
    for line in dump.splitlines():
        m = re.search(r"group_id=(\d+)", line)
        if not m:
            continue
        out[int(m.group(1))] = [int(x) for x in re.findall(r"bucket\d+:packet_count=\d+,byte_count=(\d+)", line)]
    return out


#: A UDP sender with many flows (one socket per source port), equal bytes per flow, paced to a rate.
#: argv: dst_ip rate_bps seconds flows first_port. Prints the number of packets sent.
UDP_SENDER = r"""
import socket, sys, time
dst, rate, seconds, flows, first = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
size = 1000
socks = []
for i in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", first + i))
    socks.append(s)
payload = b"x" * size
interval = size * 8 / rate
t0 = time.monotonic()
n = 0
while True:
    el = time.monotonic() - t0
    if el >= seconds:
        break
    due = int(el / interval)
    while n < due:
        try:
            socks[n % flows].sendto(payload, (dst, 9))
        except OSError:
            pass
        n += 1
    time.sleep(0.002)
print(n, flush=True)
"""


def start_udp(host, dst_ip: str, rate_bps: float, seconds: float, flows: int, first_port: int = 20000):
    return host.popen(["/usr/bin/python3", "-c", UDP_SENDER, dst_ip, str(rate_bps), str(seconds), str(flows),
                       str(first_port)])
