"""Discovery-only mode without switches: observations -> Topology, settle and change detection, and the
core learning, installing and replacing a discovered topology (make-before-break across a rebuild)."""

from __future__ import annotations

import numpy as np
import pytest
from tellm.controller.core import ControllerCore
from tellm.controller.discovery import (
    DiscoveredNetwork,
    TopologyDiscovery,
    build_topology,
    port_speed_bps,
    settle_polls,
    topology_change,
)
from tellm.controller.groups import LABEL_ALT_BASE, LABEL_BASE
from tellm.controller.planner import OpKind
from tellm.controller.routers import ECMPRouter, RoutingInput

# Diamond: dpid 1 - 2 - 4 and 1 - 3 - 4. Wire (a, port a, b, port b); port 10 + far dpid.
DIAMOND = [(1, 12, 2, 11), (1, 13, 3, 11), (2, 14, 4, 12), (3, 14, 4, 13)]


def _net(wires=DIAMOND, both=True, speeds_kbps=None) -> DiscoveredNetwork:
    net = DiscoveredNetwork()
    for a, p, b, q in wires:
        net.add_switch(a)
        net.add_switch(b)
        net.add_link(a, p, b, q)
        if both:
            net.add_link(b, q, a, p)
    for (d, port), kbps in (speeds_kbps or {}).items():
        net.set_port_speed(d, port, port_speed_bps(kbps, 0))
    return net


def _cap(built, src, dst):
    t = built.topo
    return t.capacity_bps[t.link_index[(t.node_index[src], t.node_index[dst])]]


def test_port_speed_from_ethernet_property():
    assert port_speed_bps(10_000_000, 0) == 10e9  # kbit/s: OVS reports veth ports as 10 Gbit/s
    assert port_speed_bps(0, 1_000_000) == 1e9  # no current speed: the maximum
    assert port_speed_bps(0, 0) == 0.0 and port_speed_bps(None, None) == 0.0


def test_topology_from_discovered_links_and_speeds():
    speeds = {(a, p): 30_000 for a, p, b, q in DIAMOND[:1]} | {(b, q): 30_000 for a, p, b, q in DIAMOND[:1]}
    speeds |= {(2, 14): 100_000, (4, 12): 20_000}  # the slower end wins
    speeds |= {(1, 13): 40_000}  # one end known: that one
    built = build_topology(_net(speeds_kbps=speeds), default_capacity_bps=5e9)
    t = built.topo
    assert t.nodes == ("s1", "s2", "s3", "s4") and built.node_dpid == {"s1": 1, "s2": 2, "s3": 3, "s4": 4}
    assert t.num_links == 8 and t.is_symmetric
    assert _cap(built, "s1", "s2") == _cap(built, "s2", "s1") == 30e6
    assert _cap(built, "s2", "s4") == _cap(built, "s4", "s2") == 20e6
    assert _cap(built, "s1", "s3") == 40e6
    assert _cap(built, "s3", "s4") == _cap(built, "s4", "s3") == 5e9  # neither end reports a speed
    assert sorted(built.defaulted) == ["s3->s4", "s4->s3"]
    assert built.seen.all() and not built.one_way
    li = t.link_index
    assert built.link_port[li[(0, 1)]] == 12 and built.link_dst_port[li[(0, 1)]] == 11
    assert built.link_port[li[(3, 2)]] == 13 and built.link_dst_port[li[(3, 2)]] == 14
    assert np.all(t.weight == 1.0)


def test_one_directional_lldp_gives_both_links_and_the_unseen_one_is_down():
    net = _net(both=True)
    del net.links[(4, 13)]  # the probe 4 -> 3 never arrived
    built = build_topology(net, 10e9)
    t = built.topo
    lid = t.link_index[(t.node_index["s4"], t.node_index["s3"])]
    assert t.num_links == 8 and built.one_way == ["s4->s3"]
    assert built.link_port[lid] == -1 and built.wire_src_port[lid] == 13
    # A wire seen in one direction only, and the other direction arriving later, is the same topology.
    net.add_link(4, 13, 3, 14)
    assert build_topology(net, 10e9).key == built.key


def test_parallel_wires_islands_and_nothing_linked():
    net = _net(DIAMOND + [(1, 22, 2, 21), (7, 1, 8, 1)])
    built = build_topology(net, 10e9)
    t = built.topo
    assert t.nodes == ("s1", "s2", "s3", "s4")  # the largest group; 7 - 8 waits
    assert built.left_out == (7, 8)
    assert built.parallel == (((1, 22), (2, 21)),)
    assert built.wire_src_port[t.link_index[(0, 1)]] == 12  # the lower ports win, deterministically
    lone = DiscoveredNetwork()
    lone.add_switch(1)
    assert build_topology(lone, 10e9) is None
    lone.add_link(1, 1, 9, 1)  # a probe naming a switch that never connected
    lone.add_link(1, 2, 1, 3)  # a switch looped to itself
    assert build_topology(lone, 10e9) is None
    with pytest.raises(ValueError):
        build_topology(net, 0.0)


def test_observations_change_version_only_when_new():
    net = _net()
    v = net.version
    net.add_link(1, 12, 2, 11)
    net.add_switch(1)
    net.set_port_speed(1, 12, 0.0)
    net.set_port_speed(1, 12, 0.0)
    assert net.version == v + 1
    assert net.is_link_port(2, 11) and net.is_link_port(1, 12) and not net.is_link_port(1, 1)


def test_settle_polls():
    assert settle_polls(3, 1) == 3 and settle_polls(3, 2) == 2 and settle_polls(0, 1) == 1
    assert settle_polls(1.0, 0.25) == 4
    with pytest.raises(ValueError):
        settle_polls(-1, 1)


def test_settle_then_build_once_then_rebuild_on_change_only():
    d = TopologyDiscovery(10e9, settle_polls=2)
    assert d.poll() is None  # nothing linked yet
    for a, p, b, q in DIAMOND[:3]:
        d.net.add_switch(a)
        d.net.add_switch(b)
        d.net.add_link(a, p, b, q)
        d.net.add_link(b, q, a, p)
        assert d.poll() is None  # still changing
    assert d.poll() is None  # unchanged for 1 poll
    cand = d.poll()  # unchanged for 2 polls: build
    assert cand is not None and cand.topo.num_nodes == 4 and cand.topo.num_links == 6
    assert d.poll() is None and not d.settled  # being built: not asked for again
    change = d.install(cand)
    assert change.added_nodes == ("s1", "s2", "s3", "s4") and len(change.added_links) == 6
    assert d.settled
    for _ in range(5):
        assert d.poll() is None
    # A port going down is not an observation: nothing to rebuild. A new link is.
    d.net.add_link(3, 14, 4, 13)
    assert d.poll() is None and not d.settled
    assert d.poll() is None
    new = d.poll()
    assert new is not None and new.key != cand.key
    change = topology_change(d.installed, new)
    assert change.added_links == ("s3->s4", "s4->s3") and not change.added_nodes and not change.removed_links
    assert "new links s3->s4, s4->s3" in change.describe()
    # The reverse probe of a known wire arriving later changes nothing to rebuild.
    d.install(new)
    d.net.add_link(4, 13, 3, 14)
    assert all(d.poll() is None for _ in range(4)) and d.settled


# ------------------------------------------------------------------ the core without a topology file
def _discovering_core(settle=1):
    d = TopologyDiscovery(10e9, settle_polls=settle)
    return ControllerCore(None, None, None, ECMPRouter(), discovery=d)


def _connect(core, wires, both=True):
    for a, p, b, q in wires:
        for dpid in (a, b):
            if dpid not in core.disc.connected:
                assert core.switch_connected(dpid)
        core.link_discovered(a, p, b, q)
        if both:
            core.link_discovered(b, q, a, p)


def _settle(core):
    for _ in range(10):
        cand = core.discovery_poll()
        if cand is not None:
            return cand
    raise AssertionError("discovery never settled")


def _route(core):
    inp = core.routing_input(0.0, force=True)
    plan = core.apply_routing(ECMPRouter().route(inp), inp, 0.0)
    core.commit(plan)
    return plan


def test_core_without_topology_accepts_switches_hosts_and_serves_state():
    core = _discovering_core()
    assert core.topo is None and core.routing_input(0.0) is None and core.failover_plan() is None
    _connect(core, DIAMOND[:1])
    assert core.accepts_switch(99)
    assert core.is_link_port(1, 12) and not core.is_link_port(1, 1)
    assert core.learn_host("10.0.1.1", "00:00:0a:00:01:01", 1, 1)
    assert not core.learn_host("10.0.1.9", "00:00:0a:00:01:09", 1, 12)  # never at an inter-switch port
    core.snapshot = snap = core.make_snapshot()
    assert snap["topology"]["links"] == [] and snap["discovery"]["mode"] == "discovered"
    assert snap["discovery"]["lldp_links"] == [[1, 12, 2, 11], [2, 11, 1, 12]]
    assert core.state_json()["groups"] == {}
    assert core.probe_fast()


def test_core_installs_a_discovered_topology_and_replaces_it_make_before_break():
    core = _discovering_core()
    _connect(core, DIAMOND[:3])
    core.link_discovered(3, 14, 4, 13)  # the fourth wire, one direction only
    for (a, p, b, q) in DIAMOND:
        core.port_speed(a, p, 1e9)
    built = _settle(core)
    core.install_discovered(built, built_paths(built))
    assert core.topo.num_links == 8 and core.label_base == LABEL_BASE
    up = core.link_up()
    names = core.link_names
    assert up[names.index("s4->s3")] == 0 and up.sum() == 7  # the unseen direction is down
    assert core.topo.capacity_bps.min() == 1e9
    plan = _route(core)
    assert plan.group_updates == 12
    first_labels = set(core.installed.labels)
    assert all(LABEL_BASE <= label < LABEL_ALT_BASE for _, label in first_labels)
    # The probe in the other direction arrives: the link comes up without a rebuild.
    assert core.link_discovered(4, 13, 3, 14)
    assert core.link_up().sum() == 8 and core.discovery_poll() is None
    # A fifth switch joins behind s4: a new topology, new paths, labels in the other half.
    hosts_before = dict(core.hosts)
    _connect(core, [(4, 15, 5, 14)])
    built2 = _settle(core)
    assert built2.topo.nodes == ("s1", "s2", "s3", "s4", "s5")
    assert 'link="s1->s2"' in _metrics(core)
    core.install_discovered(built2, built_paths(built2))
    assert core.label_base == LABEL_ALT_BASE and core.routing is None and core.hosts == hosts_before
    assert 'link="s1->s2"' not in _metrics(core)  # per-link series of the replaced topology are dropped
    plan = _route(core)
    assert 'link="s4->s5"' in _metrics(core)
    kinds = [op.kind for op in plan.ops]
    # Make-before-break: no label the old groups push is rewritten; old labels go only at the end.
    assert OpKind.MODIFY_LABEL not in kinds
    assert all(op.label >= LABEL_ALT_BASE for op in plan.ops if op.kind is OpKind.ADD_LABEL)
    deleted = {(op.dpid, op.label) for op in plan.ops if op.kind is OpKind.DELETE_LABEL}
    assert deleted == first_labels
    assert plan.phases[-1][0].kind is OpKind.DELETE_LABEL
    assert plan.group_updates == 20  # every ordered pair of 5 switches, in new groups
    assert set(core.installed.groups) == {(a, b) for a in range(1, 6) for b in range(1, 6) if a != b}
    core.snapshot = core.make_snapshot()
    state = core.state_json()
    assert len(state["groups"]) == 20 and state["discovery"]["topology_key"] == built2.key
    assert all(p["label"] >= LABEL_ALT_BASE for paths in state["groups"].values() for p in paths)


def _metrics(core) -> str:
    from prometheus_client import generate_latest

    return generate_latest(core.metrics.registry).decode()


def built_paths(built):
    from tecore import compute_paths

    return compute_paths(built.topo, k=2, use_cache=False, workers=1)


def test_routing_input_of_discovered_topology_is_consistent():
    core = _discovering_core()
    _connect(core, DIAMOND)
    built = _settle(core)
    core.install_discovered(built, built_paths(built))
    inp = core.routing_input(0.0, force=True)
    assert isinstance(inp, RoutingInput) and inp.demand_bps.shape == (12,)
    assert inp.link_up.sum() == 8


# ------------------------------------------------------------------ CLI
def _tellm(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tellm", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_cli_topology_is_optional_and_bad_discovery_options_fail_cleanly():
    r = _tellm("controller", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "--discovery-settle-seconds" in text and "optional: without it the topology is discovered" in text
    assert "discovery.default_capacity_links" in text
    for bad in (["--discovery-settle-seconds", "-1"], ["--default-capacity-bps", "0"], ["--k", "0"]):
        r = _tellm("controller", "--of-port", "1", "--api-port", "0", "--metrics-port", "0", *bad)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert bad[0] in r.stderr, r.stderr


def test_model_router_registers_each_discovered_topology_with_a_real_inference_server(tmp_path):
    """The model router talks to a real in-process inference service (equal-split reference model):
    the first discovered topology is registered, a rebuilt one is registered again (new version)."""
    from tellm.controller.routers import ModelRouter
    from tellm.inference.reference_model import write_equal_split_model

    from ..inference_support import RunningServer

    srv = RunningServer(write_equal_split_model(tmp_path / "reference.onnx"))
    try:
        router = ModelRouter(srv.address, timeout_seconds=10.0)
        core = ControllerCore(None, None, None, router, discovery=TopologyDiscovery(10e9, settle_polls=1))
        _connect(core, DIAMOND)
        built = _settle(core)
        core.install_discovered(built, built_paths(built))
        inp = core.routing_input(0.0, force=True)
        r = router.route(inp)
        assert r.router == "model" and r.split.shape == (core.paths.num_paths,)
        first = router._handle
        _connect(core, [(4, 15, 5, 14)])
        built2 = _settle(core)
        core.install_discovered(built2, built_paths(built2))
        inp = core.routing_input(0.0, force=True)
        r = router.route(inp)
        assert r.split.shape == (core.paths.num_paths,) and core.paths.num_paths > 24
        assert router._handle.topology_id == first.topology_id and router._handle.version > first.version
        plan = core.apply_routing(r, inp, 0.0)
        assert plan.group_updates == 20
    finally:
        srv.stop()
