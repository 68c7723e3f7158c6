"""Churn control (minimum path weight, weight deadband) on the core's plans, and the router call off
the control interval's critical path (asyncroute.py) through the app with fake switches."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest

os.environ.setdefault("OSKEN_HUB_TYPE", "native")

from tellm.controller.app import TellmController
from tellm.controller.core import ControllerConfig, ControllerCore
from tellm.controller.quantise import weights_to_split
from tellm.controller.routers import LPRouter, Routing, RoutingInput

from tecore import PathSet, Topology, link_loads

from .controller_fixtures import diamond, diamond_paths
from .test_controller_ofglue import FakeDatapath


def _grid(n=3, cap=10e6) -> tuple[Topology, PathSet]:
    """An n x n grid, both directions, up to 4 shortest simple paths per pair."""
    g = nx.grid_2d_graph(n, n)
    idx = {v: i for i, v in enumerate(sorted(g.nodes))}
    und = [(idx[a], idx[b]) for a, b in g.edges]
    src = [u for u, v in und] + [v for u, v in und]
    dst = [v for u, v in und] + [u for u, v in und]
    L = len(src)
    topo = Topology("grid", tuple(f"s{i + 1}" for i in range(n * n)), np.array(src), np.array(dst),
                    np.full(L, cap), np.ones(L), np.full(L, 1e-3))
    dg = nx.DiGraph(list(zip(src, dst)))
    node_paths = {}
    for s in range(n * n):
        for d in range(n * n):
            if s != d:
                it = nx.shortest_simple_paths(dg, s, d)
                node_paths[(s, d)] = [next(it) for _ in range(min(4, 2 if abs(s - d) == 1 else 4))]
    return topo, PathSet.from_node_paths(topo, node_paths)


def _wired_core(topo, paths, router, config) -> ControllerCore:
    core = ControllerCore(topo, paths, {n: i + 1 for i, n in enumerate(topo.nodes)}, router, config=config)
    for i in range(topo.num_nodes):
        core.switch_connected(i + 1)
    for (u, v) in topo.link_index:
        core.link_discovered(u + 1, 100 + v, v + 1, 100 + u)
    return core


def _dense_drift(paths, rng, intervals):
    """A model-like dense split over every candidate path, drifting +-10 % per interval."""
    base = rng.random(paths.num_paths) + 0.02
    out = []
    for _ in range(intervals):
        base = base * (1 + rng.uniform(-0.1, 0.1, paths.num_paths))
        out.append(base / np.repeat(np.add.reduceat(base, paths.pair_ptr[:-1]), np.diff(paths.pair_ptr)))
    return out


def _steady_ops(config, splits, topo, paths, demand):
    core = _wired_core(topo, paths, LPRouter(), config)
    inp = RoutingInput(topo, paths, demand, np.ones(topo.num_links))
    ops = []
    for split in splits:
        plan = core.apply_routing(Routing(split, "model", 0.0, 0.0), inp, 0.0)
        core.commit(plan)
        ops.append(plan.num_ops)
    return core, ops[1:]  # after the first install


def test_deadband_and_min_weight_cut_churn_of_a_drifting_dense_split():
    topo, paths = _grid()
    rng = np.random.default_rng(0)
    splits = _dense_drift(paths, rng, 12)
    demand = np.full(paths.num_pairs, 1e6)
    _, off = _steady_ops(ControllerConfig(weight_deadband=0, min_path_weight=0), splits, topo, paths, demand)
    core, on = _steady_ops(ControllerConfig(weight_deadband=0.1, min_path_weight=0.03), splits, topo, paths, demand)
    # Without churn control every pair's group is rewritten every interval (3 messages a pair).
    assert min(off) >= 2 * paths.num_pairs
    assert sum(on) * 5 < sum(off), (on, off)
    # The installed split stays within the deadband (plus quantisation and the dropped small paths) of
    # the router's split of the last interval.
    got = weights_to_split(core.weights, paths.pair_ptr)
    dist = np.add.reduceat(np.abs(got - splits[-1]), paths.pair_ptr[:-1])
    small = np.add.reduceat(np.where(splits[-1] < 0.03, splits[-1], 0.0), paths.pair_ptr[:-1])
    assert np.all(dist <= 0.1 + 2 * small + np.diff(paths.pair_ptr) / 256 + 1e-9)
    # No bucket below the floor.
    assert np.all((core.weights == 0) | (core.weights >= np.floor(0.03 * 256)))


def test_predicted_loads_are_those_of_the_installed_split():
    topo, paths = _grid()
    rng = np.random.default_rng(1)
    s0, s1 = _dense_drift(paths, rng, 2)
    core = _wired_core(topo, paths, LPRouter(), ControllerConfig(weight_deadband=0.5))
    # Ingress counters: every switch sends 1 Mbit/s to every other one.
    dests = np.arange(1, topo.num_nodes + 1)
    for d in dests:
        core.class_stats(int(d), dests, np.zeros(dests.size), 0.0)
        core.class_stats(int(d), dests, np.full(dests.size, 1e6 / 8), 1.0)
    inp = core.routing_input(1.0, force=True)
    for s, router_mlu in ((s0, 0.5), (s1, 0.25)):
        core.commit(core.apply_routing(Routing(s, "model", router_mlu, 0.0), inp, 1.0))
    # s1 is within the (wide) deadband of s0 for most pairs: the installed weights are still s0's.
    assert np.abs(core.installed_split() - s1).max() > 0.01
    snap = core.make_snapshot()
    want = link_loads(paths, core.installed_split(), inp.demand_bps) / topo.capacity_bps
    got = np.array([snap["predicted_link_utilization"][n] for n in core.link_names])
    assert np.allclose(got, want) and snap["predicted_mlu"] == pytest.approx(want.max())
    assert snap["router_predicted_mlu"] == 0.25  # the router's own figure, for its raw split


def test_a_dead_path_acts_at_once_whatever_the_deadband():
    topo = diamond()
    paths = diamond_paths(topo)
    core = _wired_core(topo, paths, LPRouter(), ControllerConfig(weight_deadband=1.9, min_path_weight=0.0))
    split = np.zeros(paths.num_paths)
    split[paths.pair_ptr[:-1]] = 0.96
    split[paths.pair_ptr[:-1] + 1] = 0.04
    inp = RoutingInput(topo, paths, np.full(paths.num_pairs, 1e6), np.ones(topo.num_links))
    core.commit(core.apply_routing(Routing(split, "model", 0.0, 0.0), inp, 0.0))
    p14 = paths.pair_lookup[0, 3]
    second = paths.pair_ptr[p14] + 1
    assert core.weights[second] > 0
    # A link of that pair's second path fails: the pair leaves it although the move is small.
    lk = paths.path_links[paths.path_ptr[second]:paths.path_ptr[second + 1]][-1]
    u, v = int(topo.src[lk]), int(topo.dst[lk])
    assert core.port_state(u + 1, 100 + v, up=False)
    plan = core.failover_plan()
    core.commit(plan)
    assert core.weights[second] == 0 and core.weights[second - 1] == 256


class _SlowRouter:
    """Answers after ``delay`` seconds (a model on a busy CPU); counts calls and overlapping calls."""

    name = "model"

    def __init__(self, delay: float):
        self.delay, self.calls, self.running, self.overlaps = delay, 0, 0, 0
        self.lock = threading.Lock()

    def route(self, inp):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.overlaps += self.running > 1
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        return LPRouter().route(inp)


def _app(router, poll):
    topo = diamond()
    core = _wired_core(topo, diamond_paths(topo), router, ControllerConfig(poll_interval_seconds=poll))
    app = TellmController(core=core, poll_interval_seconds=poll)

    def barrier(dp, xid):
        app._barrier(SimpleNamespace(msg=SimpleNamespace(datapath=dp, xid=xid)))

    for d in range(1, 5):
        app._features(SimpleNamespace(msg=SimpleNamespace(datapath=FakeDatapath(d, barrier))))
    app._do_resync()
    return app, core


def test_a_slow_router_does_not_stretch_the_interval():
    poll = 0.4
    router = _SlowRouter(delay=1.0)
    app, core = _app(router, poll)
    t0 = time.perf_counter()
    assert app.tick() is None  # waits at most half an interval, then goes on without a new routing
    assert time.perf_counter() - t0 < poll
    assert core.routing is None and core.snapshot["routing"]["in_flight_seconds"] is not None
    assert app.tick() is None  # still in flight: not asked again
    assert core.router_busy_intervals == 1 and router.calls == 1
    time.sleep(1.0)
    plan = app.tick()  # the late routing is applied now (and this interval's input submitted)
    assert plan is not None and plan.group_updates == 12 and core.routing.router == "lp"
    assert core.snapshot["routing"]["fresh_this_interval"]
    assert core.snapshot["routing_age_seconds"] >= 1.0
    assert core.metrics.routing_age._value.get() >= 1.0
    assert router.overlaps == 0 and router.calls == 2


def test_a_late_routing_for_an_old_link_state_is_dropped():
    router = _SlowRouter(delay=0.5)
    app, core = _app(router, 0.4)
    assert app.tick() is None
    core.port_state(1, 101, up=False)  # s1 -> s2 fails while the router works
    time.sleep(0.6)
    assert app.tick() is None
    assert core.routings_discarded == 1 and core.routing is None


def test_a_fast_router_is_applied_in_its_own_interval():
    app, core = _app(LPRouter(), 1.0)
    plan = app.tick()
    assert plan is not None and plan.group_updates == 12
    assert core.snapshot["routing"]["fresh_this_interval"] and core.snapshot["routing_age_seconds"] < 1.0


@pytest.mark.parametrize("flag,bad", [("--weight-deadband", -0.1), ("--weight-deadband", 2.5),
                                      ("--min-path-weight", 1.0)])
def test_cli_rejects_bad_churn_flags(flag, bad, capsys):
    from tellm.cli import main

    assert main(["controller", flag, str(bad), "--topology", "Abilene"]) == 2
    assert flag in capsys.readouterr().err


def test_counter_readings_that_arrive_together_make_no_rate_spike():
    from tellm.controller.counters import RateEstimator

    r = RateEstimator(1, min_dt_seconds=0.5)
    for t, v in ((0.0, 0), (1.0, 1000), (1.01, 1010)):  # the last reply queued behind the one before
        r.update(np.array([0]), np.array([v], dtype=np.uint64), t)
    assert r.rate[0] == pytest.approx(1000) and not r.updated[0]
    r.update(np.array([0]), np.array([2000], dtype=np.uint64), 2.0)
    assert r.rate[0] == pytest.approx(1000) and r.updated[0]  # measured from the kept baseline (t = 1)


def test_small_demands_are_held_but_never_push_a_link_past_the_guard():
    from tellm.controller.churn import MAX_HELD_EXCESS_UTILISATION, held_pairs, pair_capacity_bps

    topo = diamond(cap=10e6)
    paths = diamond_paths(topo)
    ptr = paths.pair_ptr
    old = np.zeros(paths.num_paths, dtype=np.int64)
    old[ptr[:-1]] = 256  # everything on each pair's first path
    new = np.zeros_like(old)
    new[ptr[:-1]], new[ptr[:-1] + 1] = 128, 128  # the router now halves every pair: L1 distance 1.0
    cap = pair_capacity_bps(topo, paths)
    # Tiny demands: half of 1 kbit/s would move, 0.005 of 10 Mbit/s allows 50 kbit/s: all held.
    tiny = np.full(paths.num_pairs, 1e3)
    keep = held_pairs(topo, paths, new, old, 0.1, None, tiny, cap, 0.005)
    assert keep.all()
    # Without the load rule nothing is held (the distance is far beyond 0.1).
    assert not held_pairs(topo, paths, new, old, 0.1, None, tiny, cap, 0.0).any()
    # Held pairs adding up on links: installed wholly on each pair's second (longer) path, the router
    # moves every pair to its first; with a 0.05 load deadband each pair of 400 kbit/s may hold (400
    # kbit/s would move, under 500 kbit/s), but the long paths would put links up to 0.16 of capacity
    # over the router's loads: the pairs crossing those links are re-planned.
    old, new = new.copy(), old.copy()
    old[:] = 0
    old[ptr[:-1] + 1] = 256
    mid = np.full(paths.num_pairs, 4e5)
    keep = held_pairs(topo, paths, new, old, 0.1, None, mid, cap, 0.05)
    mixed = np.where(np.repeat(keep, np.diff(ptr)), old, new)
    excess = (link_loads(paths, weights_to_split(mixed, ptr), mid)
              - link_loads(paths, weights_to_split(new, ptr), mid)) / topo.capacity_bps
    assert not keep.all() and excess.max() <= MAX_HELD_EXCESS_UTILISATION + 1e-12


def test_cli_churn_defaults_are_the_configs():
    from tellm.cli import build_parser

    args = build_parser().parse_args(["controller"])
    cfg = ControllerConfig()
    assert (args.weight_deadband, args.deadband_load, args.min_path_weight) == \
        (cfg.weight_deadband, cfg.deadband_load, cfg.min_path_weight)


def test_a_link_back_up_takes_the_routers_new_choice_at_once_then_holds_again():
    """The deadband holds pairs against drift of one link state's routing, not across link states: when
    a link comes back, a pair with little traffic moves back to the path the router now prefers."""
    topo = diamond()
    paths = diamond_paths(topo)
    core = _wired_core(topo, paths, LPRouter(), ControllerConfig())  # default deadband and load deadband
    p14 = paths.pair_lookup[0, 3]
    first, second = paths.pair_ptr[p14], paths.pair_ptr[p14] + 1
    demand = np.full(paths.num_pairs, 1e3)  # far under the load deadband: only the link state moves it
    lk = paths.path_links[paths.path_ptr[first]:paths.path_ptr[first + 1]][0]
    down = np.ones(topo.num_links)
    down[lk] = 0.0
    on_second = np.zeros(paths.num_paths)
    on_second[paths.pair_ptr[:-1] + 1] = 1.0
    core.commit(core.apply_routing(Routing(on_second, "ecmp", 0.0, 0.0),
                                   RoutingInput(topo, paths, demand, down), 0.0))
    assert core.weights[second] == 256 and core.weights[first] == 0
    up = RoutingInput(topo, paths, demand, np.ones(topo.num_links))
    on_first = np.zeros(paths.num_paths)
    on_first[paths.pair_ptr[:-1]] = 1.0
    core.commit(core.apply_routing(Routing(on_first, "ecmp", 0.0, 0.0), up, 1.0))
    assert core.weights[first] == 256 and core.weights[second] == 0
    # Same link state again: a drift back towards the second path is small traffic, so it is held.
    core.commit(core.apply_routing(Routing(on_second, "ecmp", 0.0, 0.0), up, 2.0))
    assert core.weights[first] == 256 and core.weights[second] == 0
