"""Repair paths for pairs whose candidate paths are all down: the computation (controller/repair.py),
the core's path set and labels, and the os-ken app with fake datapaths (make-before-break order of the
OpenFlow messages), with a topology file and in discovery mode."""

from __future__ import annotations

import os
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest

os.environ.setdefault("OSKEN_HUB_TYPE", "native")

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from tellm.controller import ofmsgs
from tellm.controller.app import TellmController
from tellm.controller.core import ControllerCore
from tellm.controller.failure import path_alive
from tellm.controller.repair import PathRepair, augment, carry_by_label, shortest_surviving_paths, stranded_pairs
from tellm.controller.routers import LPRouter

from tecore import PathSet, Topology

from .test_controller_ofglue import FakeDatapath, _packet_in

# s1 has three neighbours: s2 and s3 (short ways to s4) and s5 (the long way s1-s5-s6-s4). With two
# candidate paths per pair, losing s1-s2 and s1-s3 strands s1 -> s4 although s5 still connects s1.
SIX = [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (0, 4), (4, 5), (5, 3)]


def six(weights=None) -> Topology:
    src = [u for u, v in SIX] + [v for u, v in SIX]
    dst = [v for u, v in SIX] + [u for u, v in SIX]
    n = len(src)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    return Topology("six", tuple(f"s{i + 1}" for i in range(6)), np.array(src), np.array(dst), np.full(n, 10e6), w,
                    np.full(n, 1e-3))


def two_shortest(topo: Topology) -> PathSet:
    g = nx.DiGraph(list(zip(topo.src.tolist(), topo.dst.tolist())))
    return PathSet.from_node_paths(topo, {(s, d): [list(p) for p in _take(nx.shortest_simple_paths(g, s, d), 2)]
                                          for s in range(6) for d in range(6) if s != d})


def _take(it, n):
    return [x for _, x in zip(range(n), it)]


def _down(topo: Topology, *und) -> np.ndarray:
    up = np.ones(topo.num_links)
    for u, v in und:
        up[topo.link_index[(u, v)]] = up[topo.link_index[(v, u)]] = 0
    return up


def _cost(topo, links):
    return float(topo.weight[links].sum())


# ------------------------------------------------------------------ pure computation
def test_shortest_surviving_paths_match_networkx_on_the_surviving_graph():
    rng = np.random.default_rng(3)
    topo = six(weights=np.tile(rng.uniform(1, 5, len(SIX)), 2))
    up = _down(topo, (0, 1), (2, 3))
    g = nx.DiGraph()
    for i in np.flatnonzero(up):
        g.add_edge(int(topo.src[i]), int(topo.dst[i]), weight=float(topo.weight[i]))
    src, dst = np.array([0, 0, 1, 5, 3]), np.array([3, 1, 4, 2, 0])
    found, ptr, links = shortest_surviving_paths(topo, src, dst, up)
    assert found.all()
    for i, (s, d) in enumerate(zip(src, dst)):
        ls = links[ptr[i]:ptr[i + 1]]
        assert topo.src[ls[0]] == s and topo.dst[ls[-1]] == d
        assert np.all(topo.dst[ls[:-1]] == topo.src[ls[1:]]) and np.all(up[ls] > 0)  # a walk over live links
        assert _cost(topo, ls) == pytest.approx(nx.shortest_path_length(g, s, d, weight="weight"))


def test_unreachable_pairs_are_not_repaired():
    topo = six()
    up = _down(topo, (0, 1), (0, 2), (0, 4))  # s1 cut off
    found, ptr, links = shortest_surviving_paths(topo, np.array([0, 1]), np.array([3, 3]), up)
    assert found.tolist() == [False, True] and ptr.tolist() == [0, 1] and topo.dst[links[0]] == 3


def test_a_pair_with_both_paths_failed_gets_the_shortest_surviving_path():
    topo, base = six(), two_shortest(six())
    rep = PathRepair(topo, base, 16, 1 << 19)
    up = _down(topo, (0, 1), (0, 2))
    strand = stranded_pairs(base, up)
    s14 = int(base.pair_lookup[0, 3])
    assert s14 in strand.tolist()
    u = rep.update(up, np.zeros(0, dtype=np.int64))
    assert u.changed and u.unreachable.size == 0 and sorted(u.added.tolist()) == sorted(strand.tolist())
    paths = rep.paths
    # Every pair keeps its base paths (dead ones included, in order); a stranded pair has one more, alive.
    assert np.array_equal(np.diff(paths.pair_ptr), np.diff(base.pair_ptr) + np.isin(np.arange(base.num_pairs), strand))
    assert stranded_pairs(paths, up).size == 0
    a, b = paths.pair_ptr[s14], paths.pair_ptr[s14 + 1]
    assert [list(paths.path_nodes(topo, j)) for j in range(a, b - 1)] == \
        [list(base.path_nodes(topo, j)) for j in range(base.pair_ptr[s14], base.pair_ptr[s14 + 1])]
    assert list(paths.path_nodes(topo, b - 1)) == [0, 4, 5, 3] and rep.origin[b - 1] < 0
    # Base paths keep their labels; repair labels are above the base range and distinct.
    base_rows = rep.origin >= 0
    assert np.array_equal(rep.labels[base_rows], 16 + rep.origin[base_rows])
    rl = rep.labels[~base_rows]
    assert rl.min() >= 16 + base.num_paths and np.unique(rl).size == rl.size
    # Same link state: nothing to do. A further failure keeps the live repair paths (same labels).
    assert not rep.update(up, rl).changed
    kept = dict(zip(rep.repair.pairs.tolist(), rep.repair.labels.tolist()))
    u2 = rep.update(_down(topo, (0, 1), (0, 2), (1, 2)), rl)
    assert u2.changed and all(kept[p] == lab for p, lab in zip(rep.repair.pairs.tolist(), rep.repair.labels.tolist())
                              if p in kept)
    # Links back: the base path set (the same object) and its labels.
    u3 = rep.update(np.ones(topo.num_links), rep.labels)
    assert u3.changed and u3.stranded.size == 0 and rep.paths is base
    assert np.array_equal(rep.labels, 16 + np.arange(base.num_paths))


def test_repair_labels_are_never_reused_while_installed():
    topo, base = six(), two_shortest(six())
    lo = 16 + base.num_paths
    rep = PathRepair(topo, base, 16, lo + 12)  # a small label space: it must rotate and skip
    up = _down(topo, (0, 1), (0, 2))
    rep.update(up, np.zeros(0, dtype=np.int64))
    first = set(rep.repair.labels.tolist())
    rep.update(np.ones(topo.num_links), np.array(sorted(first)))  # repairs gone, labels still installed
    rep.update(up, np.array(sorted(first)))
    assert not first & set(rep.repair.labels.tolist())


def test_augment_and_carry_by_label():
    topo, base = six(), two_shortest(six())
    rep = PathRepair(topo, base, 16, 1 << 19)
    split = np.random.default_rng(0).random(base.num_paths)
    rep.update(_down(topo, (0, 1), (0, 2)), np.zeros(0, dtype=np.int64))
    moved = carry_by_label(16 + np.arange(base.num_paths), split, rep.labels)
    assert np.array_equal(moved[rep.origin >= 0], split[rep.origin[rep.origin >= 0]])
    assert np.all(moved[rep.origin < 0] == 0)
    same, origin = augment(base, rep.repair.select(np.zeros(rep.repair.size, dtype=bool)))
    assert same is base and np.array_equal(origin, np.arange(base.num_paths))


# ------------------------------------------------------------------ the core and the os-ken app
class LoggedDatapath(FakeDatapath):
    """A fake switch that also appends every message to one log shared by all switches (global order)."""

    def __init__(self, dpid, on_barrier, log):
        super().__init__(dpid, on_barrier)
        self.log = log

    def send_msg(self, msg):
        super().send_msg(msg)
        self.log.append((self.id, msg))


class RecordingLP(LPRouter):
    def __init__(self):
        super().__init__()
        self.inputs = []

    def route(self, inp):
        self.inputs.append(inp)
        return super().route(inp)


def _kind(msg):
    """(kind, key) of a TE message: label add/delete (label), group add/delete (group id), class (dest)."""
    if isinstance(msg, parser.OFPGroupMod):
        return ("group" if msg.command == ofp.OFPGC_ADD else "del_group"), msg.group_id
    if isinstance(msg, parser.OFPFlowMod):
        if msg.cookie & ofmsgs.COOKIE_MASK == ofmsgs.COOKIE_LABEL and msg.command != ofp.OFPFC_DELETE_STRICT:
            return "label", msg.match["mpls_label"]
        if msg.cookie & ofmsgs.COOKIE_MASK == ofmsgs.COOKIE_CLASS:
            return "class", msg.cookie & 0xFFFFFFFF
        if msg.command == ofp.OFPFC_DELETE_STRICT and "mpls_label" in msg.match:
            return "del_label", msg.match["mpls_label"]
    return None, None


def _group_labels(msg) -> list[int]:
    return [a.value for b in msg.buckets for a in b.actions if isinstance(a, parser.OFPActionSetField)]


def _wired_app(core, log):
    """The app with six fake switches; port 10 + v of node u leads to node v (LLDP delivered)."""
    app = TellmController(core=core, poll_interval_seconds=1.0)

    def barrier(dp, xid):
        app._barrier(SimpleNamespace(msg=SimpleNamespace(datapath=dp, xid=xid)))

    dps = {d: LoggedDatapath(d, barrier, log) for d in range(1, 7)}
    for dp in dps.values():
        app._features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    app._do_resync()
    nbrs = {u: sorted({b for a, b in SIX if a == u} | {a for a, b in SIX if b == u}) for u in range(6)}
    for u in range(6):
        body = [parser.OFPPort(port_no=p, hw_addr=f"00:00:00:00:{u + 1:02x}:{p:02x}", config=0, state=0)
                for p in [1] + [10 + v for v in nbrs[u]]]
        app._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dps[u + 1], body=body)))
    for _ in range(3):  # discovery mode settles over a few polls; LLDP keeps crossing the wires
        for u in range(6):
            for out in dps[u + 1].of(parser.OFPPacketOut):
                port = out.actions[0].port
                if port >= 10:
                    app._packet_in(_packet_in(dps[port - 10 + 1], 10 + u, out.data))
            dps[u + 1].sent.clear()
        if core.discovery is not None:
            app._discover()
            if app._builder is not None:
                app._builder.join(30)
            app._discover()
        for dp in dps.values():
            app._send_lldp(dp)
    return app, dps


def _port_status(app, dp, port, down):
    desc = parser.OFPPort(port_no=port, hw_addr=f"00:00:00:00:{dp.id:02x}:{port:02x}", config=0,
                          state=ofp.OFPPS_LINK_DOWN if down else 0)
    app._port_status(SimpleNamespace(msg=parser.OFPPortStatus(dp, reason=ofp.OFPPR_MODIFY, desc=desc)))


def _core(mode, router):
    if mode == "file":
        topo = six()
        return ControllerCore(topo, two_shortest(topo), {f"s{i}": i for i in range(1, 7)}, router)
    from tellm.controller.discovery import TopologyDiscovery

    return ControllerCore(None, None, None, router,
                          discovery=TopologyDiscovery(10e6, settle_polls=1, paths_for=two_shortest))


@pytest.mark.parametrize("mode", ["file", "discovered"])
def test_app_repairs_two_failures_make_before_break_and_restores(mode):
    router = RecordingLP()
    core = _core(mode, router)
    log: list = []
    app, dps = _wired_app(core, log)
    assert core.topo is not None and core.link_up().all(), "the six switches and their links were not learnt"
    assert app.tick() is not None
    topo, base = core.topo, core.paths
    s1, s4 = topo.nodes.index("s1"), topo.nodes.index("s4")
    base_labels = core.path_labels.copy()
    gid_before = core.installed.groups[(1, 4)][0]
    log.clear()
    # s1 loses s2 and s3: every candidate path of s1 -> s4 (and others) is down; s1-s5-s6-s4 survives.
    _port_status(app, dps[1], 10 + topo.nodes.index("s2"), True)
    _port_status(app, dps[1], 10 + topo.nodes.index("s3"), True)
    assert app._failover_pending
    app._failover()
    state = core.state_json()
    rep = state["repair"]
    assert "s1->s4" in rep["stranded_pairs"] and rep["unreachable_pairs"] == []
    assert rep["repaired_pairs"]["s1->s4"]["path"] == ["s1", "s5", "s6", "s4"]
    assert sorted(rep["repaired_pairs"]) == sorted(rep["stranded_pairs"])
    assert core.metrics.stranded_pairs._value.get() == len(rep["stranded_pairs"]) > 0
    assert core.metrics.repaired_pairs._value.get() == len(rep["repaired_pairs"])
    label = rep["repaired_pairs"]["s1->s4"]["label"]
    assert label not in base_labels.tolist()
    # Make-before-break in the global message order: the repair label on s5, s6 and s4, then the new
    # group on s1 that pushes it, then s1's classification rule moves to it, then the old group goes.
    order = [(dpid, *_kind(m), m) for dpid, m in log]
    at = {}
    for i, (dpid, kind, key, m) in enumerate(order):
        if kind == "label" and key == label:
            at.setdefault(("label", dpid), i)
        if kind == "group" and dpid == 1 and label in _group_labels(m):
            at["group"] = i
        if kind == "class" and dpid == 1 and key == 4:
            at["class"] = i
        if kind == "del_group" and dpid == 1 and key == gid_before:
            at["del_group"] = i
    assert {("label", 5), ("label", 6), ("label", 4)} <= set(at) and "group" in at, at
    assert max(at[("label", d)] for d in (5, 6, 4)) < at["group"] < at["class"] < at["del_group"]
    assert not [m for _, kind, _, m in order if kind == "label" and m.command != ofp.OFPFC_ADD]  # none rewritten
    groups = state["groups"]["s1->s4"]
    assert [p["repair"] for p in groups] == [False, False, True]
    assert [p["weight"] for p in groups] == [0, 0, 256] and groups[2]["label"] == label
    # The next interval routes over the path set with the repair paths (the LP, like any pair).
    router.inputs.clear()
    app._force.set()
    app.tick()
    inp = router.inputs[-1]
    assert inp.paths is core.paths and inp.paths.num_paths == base.num_paths + len(rep["repaired_pairs"])
    assert path_alive(inp.paths, inp.link_up)[inp.paths.pair_ptr[base.pair_lookup[s1, s4]]:
                                                inp.paths.pair_ptr[base.pair_lookup[s1, s4] + 1]].tolist() == \
        [False, False, True]
    assert core.installed.groups[(1, 4)][1][0].label == label
    # The links come back: the base path set, its labels, and the repair state removed after the new groups.
    log.clear()
    _port_status(app, dps[1], 10 + topo.nodes.index("s2"), False)
    _port_status(app, dps[1], 10 + topo.nodes.index("s3"), False)
    app.tick()
    assert core.paths is base and np.array_equal(core.path_labels, base_labels)
    assert core.state_json()["repair"] == {"stranded_pairs": [], "repaired_pairs": {}, "unreachable_pairs": []}
    assert core.metrics.stranded_pairs._value.get() == 0 == core.metrics.repaired_pairs._value.get()
    order = [(dpid, *_kind(m)) for dpid, m in log]
    class_at = max(i for i, (dpid, kind, key) in enumerate(order) if kind == "class" and dpid == 1 and key == 4)
    gone = [i for i, (dpid, kind, key) in enumerate(order) if kind == "del_label" and key == label]
    assert sorted(dpid for dpid, kind, key in order if kind == "del_label" and key == label) == [4, 5, 6]
    assert min(gone) > class_at
    assert all(b.label in base_labels.tolist() for b in core.installed.groups[(1, 4)][1])
    assert all(lab in base_labels.tolist() for _, lab in core.installed.labels)


def test_model_router_registers_the_repaired_path_set_with_a_real_inference_server(tmp_path):
    from tellm.controller.routers import ModelRouter
    from tellm.inference.reference_model import write_equal_split_model

    from ..inference_support import RunningServer

    srv = RunningServer(write_equal_split_model(tmp_path / "reference.onnx"))
    try:
        router = ModelRouter(srv.address, timeout_seconds=10.0)
        topo = six()
        core = ControllerCore(topo, two_shortest(topo), {f"s{i}": i for i in range(1, 7)}, router)
        core.disc.connected.update(range(1, 7))
        core.disc.link_port[:] = 10 + topo.dst
        core.disc.link_dst_port[:] = 10 + topo.src
        inp = core.routing_input(0.0, force=True)
        core.apply_routing(router.route(inp), inp, 0.0)
        first = router._handle
        core.port_state(1, 11, up=False)
        core.port_state(1, 12, up=False)
        inp = core.routing_input(0.0)
        assert inp.paths.num_paths > core.repair.base.num_paths
        r = router.route(inp)
        assert router._handle.version > first.version and r.split.shape == (inp.paths.num_paths,)
        plan = core.apply_routing(r, inp, 0.0)
        assert any(op.label not in range(16, 16 + core.repair.base.num_paths) for op in plan.ops if op.label)
        core.port_state(1, 11, up=True)
        core.port_state(1, 12, up=True)
        inp = core.routing_input(0.0)
        assert inp.paths is core.repair.base
        r = router.route(inp)
        assert router._handle.version > first.version + 1 and r.split.shape == (core.repair.base.num_paths,)
    finally:
        srv.stop()

