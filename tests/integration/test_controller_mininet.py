"""The controller against real Open vSwitch (userspace datapath) under Mininet: a 4-switch diamond
whose upper path (cs1-cs2-cs4, 30 Mbit/s) has 3x the capacity of the lower one (cs1-cs3-cs4,
10 Mbit/s), so the min-MLU split of cs1 -> cs4 traffic is exactly 0.75 / 0.25.

Checks: all hosts ping; the installed groups, buckets, weights and label flows are the plan the
controller reports; the realised split read from the group's bucket byte counters is within a
flow-count tolerance of the target; a link failure is repaired locally; metrics are served; SIGTERM
stops the controller cleanly. Needs root, Open vSwitch and Mininet (CI runs as root)."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from tellm.mininet_scenarios.ofctl import ofctl, parse_group_stats, parse_groups
from tellm.mininet_scenarios.udpflows import start_udp

from . import controller_net as cn
from .controller_net import Ctx

pytestmark = pytest.mark.mininet

FLOWS_PER_SENDER = 256
TOTAL_WEIGHT = 256


# lp: min-MLU splits 3:1 by capacity; ecmp (the shortest-path baseline): 1:1 over the two 2-hop paths.
EXPECTED_WEIGHTS = {"lp": [64, 192], "ecmp": [128, 128]}


@pytest.fixture(scope="module", params=["lp", "ecmp"])
def diamond(request, tmp_path_factory):
    router = request.param
    with cn.controller_on_diamond(tmp_path_factory.mktemp("ctl-mininet"), router,
                                  lambda s: all(link["up"] for link in s["topology"]["links"]) and s["router"] == router,
                                  "all 8 links discovered and a routing installed",
                                  extra=["--total-weight", str(TOTAL_WEIGHT)]) as ctx:
        yield ctx


def test_all_hosts_ping(diamond):
    diamond.net.pingAll(timeout=1)  # the first round also teaches the controller every host
    assert diamond.net.pingAll(timeout=1) == 0.0


def _settled_dumps(ctx: Ctx, tries: int = 20):
    """(state, groups, flows) read while no plan was being executed (the same finished plan before and
    after the dumps), so that the switches hold exactly the plan the state describes."""
    for _ in range(tries):
        before = ctx.state()
        groups = {s: parse_groups(ofctl("dump-groups", s)) for s in cn.SWITCHES}
        flows = {s: ofctl("dump-flows", s) for s in cn.SWITCHES}
        after = ctx.state()
        if before["plans_started"] == before["plans_done"] == after["plans_started"] == after["plans_done"]:
            return after, groups, flows
        time.sleep(0.2)
    raise AssertionError("the controller never stopped updating the switches")


def _check_installed_matches_plan(ctx: Ctx) -> int:
    """Compare ovs-ofctl dumps with the plan in /state; returns the number of weighted buckets checked."""
    state, groups, flows = _settled_dumps(ctx)
    links = {(link["src"], link["dst"]): link["port"] for link in state["topology"]["links"]}
    checked = 0
    for pair, paths in state["groups"].items():
        src, dst = pair.split("->")
        active = [p for p in paths if p["weight"] > 0]
        assert active, f"{pair} has no weighted path"
        want = sorted((p["label"], p["weight"], links[(p["path"][0], p["path"][1])]) for p in active)
        assert sum(p["weight"] for p in active) == TOTAL_WEIGHT
        dest_dpid = cn.SWITCHES.index(dst) + 1
        cls = re.search(rf"priority=100,ip,nw_dst=10\.0\.{dest_dpid}\.0/24 actions=group:(\d+)", flows[src])
        assert cls, f"no classification rule on {src} for {dst}"
        gid = int(cls.group(1))
        got = sorted((b["label"], b["weight"], b["port"]) for b in groups[src][gid])
        assert got == want, f"{pair}: group {gid} on {src} holds {got}, plan says {want}"
        for p in active:
            nodes, label = p["path"], p["label"]
            for k in range(1, len(nodes) - 1):
                port = links[(nodes[k], nodes[k + 1])]
                assert re.search(rf"mpls_label={label} actions=output:{port}\b", flows[nodes[k]]), \
                    f"transit rule for label {label} missing on {nodes[k]}"
            assert re.search(rf"mpls_label={label} actions=pop_mpls:0x0800,goto_table:1", flows[nodes[-1]]), \
                f"egress rule for label {label} missing on {nodes[-1]}"
            checked += 1
    return checked


def test_installed_groups_and_flows_match_plan(diamond):
    assert len(diamond.state()["groups"]) == 12
    assert _check_installed_matches_plan(diamond) >= 12
    assert "selection_method=dp_hash" in ofctl("dump-groups", "cs1")


def test_realised_split_matches_target(diamond):
    net = diamond.net
    h11, h12 = net.get("h1x1", "h1x2")
    rate_bps = 10e6
    senders = [start_udp(h11, "10.0.4.1", rate_bps, 11, FLOWS_PER_SENDER, 20000),
               start_udp(h12, "10.0.4.2", rate_bps, 11, FLOWS_PER_SENDER, 30000)]
    try:
        # The LP sees ~20 Mbit/s cs1 -> cs4 and splits it 3:1 (capacities 30 vs 10 Mbit/s).
        want = EXPECTED_WEIGHTS[diamond.router]
        state = diamond.wait(lambda s: sorted(p["weight"] for p in s["groups"]["cs1->cs4"] if p["weight"]) == want,
                             10, f"the {want} split of cs1->cs4")
        time.sleep(1.5)
        state = diamond.state()
        plan = {p["label"]: p["weight"] / TOTAL_WEIGHT for p in state["groups"]["cs1->cs4"]}
        cls = re.search(r"nw_dst=10\.0\.4\.0/24 actions=group:(\d+)", ofctl("dump-flows", "cs1"))
        gid = int(cls.group(1))
        buckets = parse_groups(ofctl("dump-groups", "cs1"))[gid]
        before = parse_group_stats(ofctl("dump-group-stats", "cs1"))[gid]
        time.sleep(4)
        after = parse_group_stats(ofctl("dump-group-stats", "cs1"))[gid]
        end_state = diamond.state()
    finally:
        for p in senders:
            p.wait(30)
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta)
    assert total > 4 * 2 * rate_bps / 8 * 0.5, f"too little traffic through the group: {total} bytes"
    flows = 2 * FLOWS_PER_SENDER
    for b, d in zip(buckets, delta):
        target = plan[b["label"]]
        # Each flow lands on one bucket (hash), equal bytes per flow: binomial share, 4 sigma,
        # plus the quantisation bound 1/W.
        tol = 4 * math.sqrt(target * (1 - target) / flows) + 1 / TOTAL_WEIGHT
        print(f"bucket label {b['label']}: realised {d / total:.4f} of {total} bytes, target {target:.4f} ± {tol:.4f}")
        assert abs(d / total - target) <= tol, f"bucket {b}: realised {d / total:.3f}, target {target:.3f} ± {tol:.3f}"
    # The controller reads the same counters (group stats) and reports the realised split in /state.
    for p in end_state["groups"]["cs1->cs4"]:
        if p["weight"] > 0:
            tol = 4 * math.sqrt(p["split"] * (1 - p["split"]) / flows) + 1 / TOTAL_WEIGHT
            assert p["realised"] is not None and abs(p["realised"] - p["split"]) <= tol, p
    # The TM estimate from the ingress rule counters sees the offered load (plus Ethernet/IP/UDP headers).
    tm = end_state["traffic_matrix_bps"][0][3]
    assert 2 * rate_bps * 0.85 <= tm <= 2 * rate_bps * 1.2, tm
    # lp: MLU = demand / (30 + 10 Mbit/s); ecmp: half the demand on the 10 Mbit/s path.
    want_mlu = tm / 40e6 if diamond.router == "lp" else tm / 2 / 10e6
    assert end_state["predicted_mlu"] == pytest.approx(want_mlu, rel=0.05)
    assert 0.6 * want_mlu < end_state["mlu"] < 1.4 * want_mlu  # measured on port counters
    if diamond.router == "lp":
        assert end_state["shortest_path_mlu"] > 1.5 * end_state["predicted_mlu"]
    else:
        assert end_state["shortest_path_mlu"] == pytest.approx(end_state["predicted_mlu"], rel=1e-6)


def test_link_failure_is_repaired_locally(diamond):
    net = diamond.net
    t0 = time.monotonic()
    net.configLinkStatus("cs1", "cs2", "down")
    try:
        port_cs3 = next(link["port"] for link in diamond.state()["topology"]["links"]
                        if (link["src"], link["dst"]) == ("cs1", "cs3"))

        def repaired(s):
            return (not next(link["up"] for link in s["topology"]["links"] if (link["src"], link["dst"]) == ("cs1", "cs2"))
                    and all(p["weight"] == 0 for p in s["groups"]["cs1->cs4"] if "cs2" in p["path"]))

        diamond.wait(repaired, 3, "cs1->cs4 moved off cs1-cs2")
        print(f"failover seen in /state {time.monotonic() - t0:.2f} s after the link went down (polled every 0.5 s)")
        cls = re.search(r"nw_dst=10\.0\.4\.0/24 actions=group:(\d+)", ofctl("dump-flows", "cs1"))
        buckets = parse_groups(ofctl("dump-groups", "cs1"))[int(cls.group(1))]
        assert [b["port"] for b in buckets] == [port_cs3]
        assert _check_installed_matches_plan(diamond) >= 12
        assert net.pingAll(timeout=1) == 0.0  # every pair still has a path: none is blackholed
    finally:
        net.configLinkStatus("cs1", "cs2", "up")
    diamond.wait(lambda s: all(link["up"] for link in s["topology"]["links"]), 10, "the link to come back")


def test_switch_reconnect_reinstalls_its_state(diamond):
    # cs2 loses its controller and all of its state (as after a switch restart), then comes back.
    target = subprocess.run(["ovs-vsctl", "get-controller", "cs2"], capture_output=True, text=True,
                            check=True).stdout.split()
    subprocess.run(["ovs-vsctl", "del-controller", "cs2"], check=True)
    try:
        diamond.wait(lambda s: 2 not in s["topology"]["connected_switches"], 10, "cs2 to disconnect")
        ofctl("del-flows", "cs2")
        ofctl("del-groups", "cs2")
        assert "mpls_label" not in ofctl("dump-flows", "cs2")
    finally:
        subprocess.run(["ovs-vsctl", "set-controller", "cs2", *target], check=True)
    state = diamond.wait(lambda s: 2 in s["topology"]["connected_switches"]
                         and all(link["up"] for link in s["topology"]["links"])
                         and any("cs2" in p["path"] and p["weight"] > 0 for p in s["groups"]["cs1->cs4"]),
                         15, "cs2 back with its links and carrying traffic")
    assert _check_installed_matches_plan(diamond) >= 12
    assert diamond.net.pingAll(timeout=1) == 0.0
    assert state["router"] == diamond.router


def test_metrics_served(diamond):
    with urllib.request.urlopen(f"http://127.0.0.1:{diamond.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for name in ("tellm_mlu_ratio", "tellm_link_utilization_ratio{link=\"cs1->cs2\"}",
                 "tellm_link_throughput_bits_per_second", "tellm_traffic_matrix_total_bits_per_second",
                 "tellm_control_loop_duration_seconds_bucket", "tellm_group_updates_total",
                 f"tellm_routing_info{{router=\"{diamond.router}\"}} 1.0", "tellm_shortest_path_mlu_ratio"):
        assert name in text, name
    updates = float(re.search(r"^tellm_group_updates_total (\S+)", text, re.MULTILINE).group(1))
    assert updates >= 12


def test_sigterm_stops_cleanly(diamond):
    diamond.ctl.send_signal(signal.SIGTERM)
    assert diamond.ctl.wait(15) == 0
    log = diamond.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
