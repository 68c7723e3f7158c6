"""MLU, ECMP and the LP optimum on hand-computed cases and against brute force."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest

from tecore import (Topology, TrafficMatrix, check_split, compute_paths, ecmp_link_loads, link_loads, mlu,
                    shortest_path_split, solve_min_mlu, split_mlu, uniform_split)


def diamond(cap_top=10.0, cap_bottom=10.0):
    """a -> {b, c} -> d; a-b-d (top) and a-c-d (bottom), equal hop counts."""
    g = nx.Graph()
    g.add_edge("a", "b", capacity_bps=cap_top)
    g.add_edge("b", "d", capacity_bps=cap_top)
    g.add_edge("a", "c", capacity_bps=cap_bottom)
    g.add_edge("c", "d", capacity_bps=cap_bottom)
    return Topology.from_networkx(g, name="diamond")


def tm_for(t, entries):
    d = np.zeros((t.num_nodes, t.num_nodes))
    for (s, dst), v in entries.items():
        d[t.node_index[s], t.node_index[dst]] = v
    return TrafficMatrix(d)


def test_hand_computed_mlu_single_path():
    t = diamond()
    ps = compute_paths(t, k=2, use_cache=False, workers=1)
    tm = tm_for(t, {("a", "d"): 8.0})
    dem = tm.pair_demands(ps.pairs)
    split = np.zeros(ps.num_paths)
    split[ps.pair_ptr[:-1]] = 1.0  # everything on each pair's first path
    loads = link_loads(ps, split, dem)
    assert loads.sum() == pytest.approx(16.0)  # 8 on each of two links
    assert mlu(t, loads) == pytest.approx(0.8)


def test_ecmp_splits_equal_cost_paths_hop_by_hop():
    t = diamond()
    tm = tm_for(t, {("a", "d"): 8.0})
    loads = ecmp_link_loads(t, tm)
    a, b, c, d = (t.node_index[x] for x in "abcd")
    li = t.link_index
    for u, v in [(a, b), (b, d), (a, c), (c, d)]:
        assert loads[li[(u, v)]] == pytest.approx(4.0)
    assert mlu(t, loads) == pytest.approx(0.4)


def test_ecmp_is_hop_by_hop_not_per_path():
    # Three equal-cost a->f paths: a-b-d-f, a-b-e-f, a-c-x-f. Per-path equal split would give 1/3 each;
    # hop-by-hop ECMP gives a's two next hops 1/2 each, then b's two next hops 1/4 each.
    g = nx.Graph()
    for u, v in [("a", "b"), ("a", "c"), ("b", "d"), ("b", "e"), ("c", "x"), ("d", "f"), ("e", "f"), ("x", "f")]:
        g.add_edge(u, v, capacity_bps=1.0)
    t = Topology.from_networkx(g)
    loads = ecmp_link_loads(t, tm_for(t, {("a", "f"): 1.0}))
    li, ix = t.link_index, t.node_index
    want = {("a", "b"): 0.5, ("a", "c"): 0.5, ("b", "d"): 0.25, ("b", "e"): 0.25, ("c", "x"): 0.5,
            ("x", "f"): 0.5, ("d", "f"): 0.25, ("e", "f"): 0.25}
    for (u, v), w in want.items():
        assert loads[li[(ix[u], ix[v])]] == pytest.approx(w)
    assert loads.sum() == pytest.approx(3.0)


def test_lp_balances_the_diamond():
    t = diamond(cap_top=10.0, cap_bottom=30.0)
    ps = compute_paths(t, k=2, use_cache=False, workers=1)
    tm = tm_for(t, {("a", "d"): 20.0})
    r = solve_min_mlu(t, ps, tm.pair_demands(ps.pairs))
    assert r.mlu == pytest.approx(0.5)  # 5 over the top (10), 15 over the bottom (30)
    check_split(ps, r.split)
    assert split_mlu(t, ps, r.split, tm.pair_demands(ps.pairs)) == pytest.approx(r.mlu)


def test_lp_matches_brute_force_on_four_nodes():
    rng = np.random.default_rng(0)
    g = nx.complete_graph(4)
    for u, v in g.edges:
        g.edges[u, v]["capacity_bps"] = float(rng.uniform(5, 20))
    t = Topology.from_networkx(g)
    ps = compute_paths(t, k=2, use_cache=False, workers=1)
    # Only three pairs carry traffic, so brute force over a grid of their splits is exact enough.
    d = np.zeros((4, 4))
    d[0, 1], d[1, 2], d[2, 0] = 9.0, 7.0, 11.0
    dem = TrafficMatrix(d).pair_demands(ps.pairs)
    active = np.flatnonzero(dem > 0)
    grid = np.linspace(0, 1, 51)
    best = np.inf
    base = np.zeros(ps.num_paths)
    base[ps.pair_ptr[:-1]] = 1.0
    for combo in itertools.product(grid, repeat=len(active)):
        s = base.copy()
        for pair, x in zip(active, combo):
            s[ps.pair_ptr[pair]], s[ps.pair_ptr[pair] + 1] = x, 1 - x
        best = min(best, split_mlu(t, ps, s, dem))
    r = solve_min_mlu(t, ps, dem)
    assert r.mlu <= best + 1e-9  # the LP is never worse than any split on the grid ...
    assert r.mlu >= best - 0.04 * best  # ... and the grid (step 0.02) gets within 4% of it


def test_lp_edge_cases():
    t = diamond()
    ps = compute_paths(t, k=2, use_cache=False, workers=1)
    r = solve_min_mlu(t, ps, np.zeros(ps.num_pairs))
    assert r.mlu == 0.0 and r.status == "no demand"
    check_split(ps, r.split)
    with pytest.raises(ValueError, match="finite"):
        solve_min_mlu(t, ps, np.full(ps.num_pairs, np.nan))
    with pytest.raises(ValueError, match="shape"):
        solve_min_mlu(t, ps, np.ones(3))


def test_splits_helpers_are_valid():
    t = diamond()
    ps = compute_paths(t, k=2, use_cache=False, workers=1)
    for s in (shortest_path_split(t, ps), uniform_split(ps)):
        check_split(ps, s)
    with pytest.raises(ValueError, match="sum to 1"):
        check_split(ps, np.full(ps.num_paths, 0.1))
