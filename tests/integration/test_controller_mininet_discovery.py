"""The controller WITHOUT a topology file against real Open vSwitch (userspace datapath) under Mininet.

The 4-switch diamond of controller_net (dpids 1-4, two hosts per switch). The controller must find the
switches, the 8 directed links with their OpenFlow ports (LLDP) and their port speeds (OpenFlow 1.5 port
descriptions), settle, compute paths, install groups and route: all hosts ping. Then a fifth cable
(cs1-cs4) is plugged in: the controller rebuilds the topology, installs the new labels and groups before
removing the old ones, and every host still pings. Needs root, Open vSwitch and Mininet."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from tellm.mininet_scenarios.ofctl import ofctl, parse_groups

from . import controller_net as cn

pytestmark = pytest.mark.mininet

SETTLE_SECONDS = 2
TOTAL_WEIGHT = 256


def _ovs_ports(switch: str) -> dict[int, tuple[str, float]]:
    """{port number: (interface name, speed in bit/s from "speed: N Mbps now", 0 when absent)}."""
    out, port = {}, None
    for line in ofctl("dump-ports-desc", switch).splitlines():
        m = re.match(r"\s*(\d+)\(([^)]+)\):", line)
        if m:
            port = int(m.group(1))
            out[port] = (m.group(2), 0.0)
            continue
        m = re.match(r"\s*speed: (\d+) Mbps now", line)
        if m and port is not None:
            out[port] = (out[port][0], float(m.group(1)) * 1e6)
    return out


def _wired_ports(net) -> dict[tuple[str, str], tuple[int, int]]:
    """{(switch a, switch b): (port on a, port on b)} for every inter-switch cable Mininet made."""
    ports = {s: {name: no for no, (name, _) in _ovs_ports(s).items()} for s in cn.SWITCHES}
    out = {}
    for link in net.links:
        a, b = link.intf1.node.name, link.intf2.node.name
        if a in ports and b in ports:
            pa, pb = ports[a][link.intf1.name], ports[b][link.intf2.name]
            out[(a, b)], out[(b, a)] = (pa, pb), (pb, pa)
    return out


def _switch(node: str) -> str:
    """Discovered node s<dpid> -> Mininet switch name (cs<dpid> in controller_net)."""
    return cn.SWITCHES[int(node[1:]) - 1]


@pytest.fixture(scope="module")
def discovered(tmp_path_factory):
    with cn.controller_on_diamond(tmp_path_factory.mktemp("ctl-discovery"), "ecmp",
                                  lambda s: s["discovery"]["settled"] and s["router"] == "ecmp"
                                  and len(s["topology"]["links"]) == 8 and all(x["up"] for x in s["topology"]["links"]),
                                  "discovery to settle on 8 links and a routing to be installed", topology=False,
                                  extra=["--discovery-settle-seconds", str(SETTLE_SECONDS),
                                         "--total-weight", str(TOTAL_WEIGHT)]) as ctx:
        ready_seconds = time.monotonic() - ctx.network_started_monotonic
        print(f"discovered, settled and routed {ready_seconds:.1f} s after the network build started")
        yield ctx


def _check_switches_hold_the_plan(ctx, state) -> int:
    """Every pair's classification rule points at a dp_hash group whose buckets are the plan's (label,
    weight, first-hop port); transit and egress label rules exist. Returns the number of pairs checked."""
    links = {(x["src"], x["dst"]): x["port"] for x in state["topology"]["links"]}
    flows = {s: ofctl("dump-flows", s) for s in cn.SWITCHES}
    groups = {s: parse_groups(ofctl("dump-groups", s)) for s in cn.SWITCHES}
    for pair, paths in state["groups"].items():
        src, dst = pair.split("->")
        active = [p for p in paths if p["weight"] > 0]
        assert active and sum(p["weight"] for p in active) == TOTAL_WEIGHT
        cls = re.search(rf"priority=100,ip,nw_dst=10\.0\.{int(dst[1:])}\.0/24 actions=group:(\d+)", flows[_switch(src)])
        assert cls, f"no classification rule on {src} for {dst}"
        got = sorted((b["label"], b["weight"], b["port"]) for b in groups[_switch(src)][int(cls.group(1))])
        want = sorted((p["label"], p["weight"], links[(p["path"][0], p["path"][1])]) for p in active)
        assert got == want, f"{pair}: switch holds {got}, plan says {want}"
        for p in active:
            nodes, label = p["path"], p["label"]
            for k in range(1, len(nodes) - 1):
                assert re.search(rf"mpls_label={label} actions=output:{links[(nodes[k], nodes[k + 1])]}\b",
                                 flows[_switch(nodes[k])]), f"transit rule for label {label} missing on {nodes[k]}"
            assert re.search(rf"mpls_label={label} actions=pop_mpls:0x0800,goto_table:1", flows[_switch(nodes[-1])])
    return len(state["groups"])


def _settled_state(ctx):
    for _ in range(20):
        before = ctx.state()
        after = ctx.state()
        if before["plans_started"] == before["plans_done"] == after["plans_started"] and \
                before["discovery"]["settled"]:
            return after
        time.sleep(0.2)
    raise AssertionError("the controller never stopped updating the switches")


def test_discovers_switches_links_ports_and_speeds(discovered):
    state = discovered.state()
    topo = state["topology"]
    assert topo["nodes"] == ["s1", "s2", "s3", "s4"] and topo["dpids"] == [1, 2, 3, 4]
    assert state["discovery"]["mode"] == "discovered" and state["discovery"]["switches"] == [1, 2, 3, 4]
    wired = _wired_ports(discovered.net)
    speeds = {s: {no: sp for no, (_, sp) in _ovs_ports(s).items()} for s in cn.SWITCHES}
    declared = {(a, b) for a, b, _ in cn.LINKS} | {(b, a) for a, b, _ in cn.LINKS}
    assert {(_switch(x["src"]), _switch(x["dst"])) for x in topo["links"]} == declared
    default = state["discovery"]["default_capacity_bps"]
    for x in topo["links"]:
        a, b = _switch(x["src"]), _switch(x["dst"])
        assert x["port"] == wired[(a, b)][0], f"{x['name']}: port {x['port']}, OVS says {wired[(a, b)][0]}"
        # The capacity is what OVS reports for the two ends (veth: 10 Gbit/s, not the TCLink rate).
        reported = [v for v in (speeds[a][wired[(a, b)][0]], speeds[b][wired[(a, b)][1]]) if v > 0]
        assert x["capacity_bps"] == (min(reported) if reported else default)
        assert (x["name"] in state["discovery"]["default_capacity_links"]) == (not reported)
    print("capacities:", {x["name"]: x["capacity_bps"] for x in topo["links"]})


def test_groups_installed_and_all_hosts_ping(discovered):
    state = _settled_state(discovered)
    assert _check_switches_hold_the_plan(discovered, state) == 12
    for s in cn.SWITCHES:
        assert ofctl("dump-groups", s).count("selection_method=dp_hash") == 3
    discovered.net.pingAll(timeout=1)  # the first round also teaches the controller every host
    assert discovered.net.pingAll(timeout=1) == 0.0


def test_new_cable_rebuilds_the_topology_and_keeps_everyone_connected(discovered):
    net = discovered.net
    before = _settled_state(discovered)
    old_key, old_base = before["discovery"]["topology_key"], before["discovery"]["label_base"]
    # A pair that always has a path must not lose packets while the network is rebuilt under it.
    ping = net.get("h1x1").popen(["ping", "-n", "-i", "0.05", "-w", "8", "10.0.4.1"], stdout=subprocess.PIPE,
                                 text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    link = net.addLink("cs1", "cs4")
    net.get("cs1").attach(link.intf1.name)
    net.get("cs4").attach(link.intf2.name)
    state = discovered.wait(lambda s: s["discovery"]["topology_key"] not in (None, old_key) and s["discovery"]["settled"]
                            and len(s["topology"]["links"]) == 10 and all(x["up"] for x in s["topology"]["links"])
                            and s["plans_started"] == s["plans_done"]
                            and any(p["weight"] > 0 and p["path"] == ["s1", "s4"] for p in s["groups"]["s1->s4"]),
                            25, "the rebuilt topology with s1-s4 routed")
    print(f"rebuilt and rerouted {time.monotonic() - t0:.1f} s after the cable was plugged in")
    out = ping.communicate(timeout=15)[0]
    sent, received = (int(x) for x in re.search(r"(\d+) packets transmitted, (\d+) received", out).groups())
    print(f"ping h1x1 -> h4x1 across the rebuild: {received}/{sent} replies")
    assert sent > 100 and received == sent, out[-500:]
    assert state["discovery"]["label_base"] != old_base
    state = _settled_state(discovered)
    assert _check_switches_hold_the_plan(discovered, state) == 12
    # The old labels are gone from every switch (make-before-break finished, nothing left behind).
    hi = max(old_base, state["discovery"]["label_base"])
    for s in cn.SWITCHES:
        labels = [int(x) for x in re.findall(r"mpls_label=(\d+)", ofctl("dump-flows", s))]
        assert labels and all((x >= hi) == (state["discovery"]["label_base"] == hi) for x in labels), (s, labels)
    assert net.pingAll(timeout=1) == 0.0
    log = discovered.log_path.read_text()
    assert "discovered topology installed" in log and "new links s1->s4, s4->s1" in log


def test_sigterm_stops_cleanly(discovered):
    discovered.ctl.send_signal(signal.SIGTERM)
    assert discovered.ctl.wait(15) == 0
    log = discovered.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
