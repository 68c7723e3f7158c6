"""The exact min-MLU optimum (multicommodity-flow LP): hand-solved cases, the path LP over all simple
paths, flow decomposition, and the second "shorten" pass."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from tecore import PathSet, Topology, TrafficMatrix, generate, solve_min_mlu
from tecore.lp import LPError
from tecore.optimum import decompose_flows, solve_optimum


def topo_of(edges, directed=False, name="t"):
    g = nx.DiGraph() if directed else nx.Graph()
    for u, v, cap in edges:
        g.add_edge(u, v, capacity_bps=float(cap))
    return Topology.from_networkx(g, name=name)


def tm_of(t, entries):
    d = np.zeros((t.num_nodes, t.num_nodes))
    for (s, dst), v in entries.items():
        d[t.node_index[s], t.node_index[dst]] = v
    return TrafficMatrix(d)


def all_simple_paths_set(t):
    g = nx.DiGraph(list(zip(t.src.tolist(), t.dst.tolist())))
    n = t.num_nodes
    return PathSet.from_node_paths(t, {(s, d): list(nx.all_simple_paths(g, s, d))
                                       for s in range(n) for d in range(n) if s != d})


def test_hand_solved_diamond_splits_evenly():
    # a->d over a-b-d and a-c-d, all links 10: 8 units split 4/4, MLU 0.4 (one path alone: 0.8).
    t = topo_of([("a", "b", 10), ("b", "d", 10), ("a", "c", 10), ("c", "d", 10)])
    r = solve_optimum(t, tm_of(t, {("a", "d"): 8.0}))
    assert r.mlu == pytest.approx(0.4, rel=1e-9)
    li, ix = t.link_index, t.node_index
    for u, v in ["ab", "bd", "ac", "cd"]:
        assert r.link_loads_bps[li[(ix[u], ix[v])]] == pytest.approx(4.0, rel=1e-9)
    assert r.link_loads_bps.sum() == pytest.approx(16.0, rel=1e-9)


def test_hand_solved_unequal_capacities():
    # a->b direct (capacity 2) or a-c-b (capacity 1 each), demand 3: x/2 = (3-x)/1 gives x = 2, MLU 1.
    t = topo_of([("a", "b", 2), ("a", "c", 1), ("c", "b", 1)])
    r = solve_optimum(t, tm_of(t, {("a", "b"): 3.0}))
    assert r.mlu == pytest.approx(1.0, rel=1e-9)
    ix, li = t.node_index, t.link_index
    assert r.link_loads_bps[li[(ix["a"], ix["b"])]] == pytest.approx(2.0, rel=1e-9)


def test_hand_solved_two_sources_share_a_bottleneck():
    # Directed: s1->m and s2->m feed m->t (capacity 4); s1->t direct capacity 1. Demands s1->t 3, s2->t 3.
    # s2 must send all 3 through m->t; s1 puts x on the direct link: MLU = max((3 + 3 - x)/4, x/1)
    # minimised at x = 6/5, MLU 1.2.
    t = topo_of([("s1", "m", 10), ("s2", "m", 10), ("m", "t", 4), ("s1", "t", 1)], directed=True)
    r = solve_optimum(t, tm_of(t, {("s1", "t"): 3.0, ("s2", "t"): 3.0}))
    assert r.mlu == pytest.approx(1.2, rel=1e-9)


@pytest.mark.parametrize("family", ["gravity", "hotspot", "bimodal", "uniform"])
@pytest.mark.parametrize("graph_seed", [0, 1, 2])
def test_equals_path_lp_over_all_simple_paths(family, graph_seed):
    rng = np.random.default_rng(graph_seed)
    g = nx.connected_watts_strogatz_graph(7, 4, 0.5, seed=graph_seed)
    for u, v in g.edges:
        g.edges[u, v]["capacity_bps"] = float(rng.choice([1e9, 2.5e9, 10e9]))
    t = Topology.from_networkx(g, name=f"ws{graph_seed}")
    ps = all_simple_paths_set(t)
    for tm in generate(t, family, 2, seed=graph_seed):
        opt = solve_optimum(t, tm)
        lp = solve_min_mlu(t, ps, tm.pair_demands(ps.pairs))
        assert opt.mlu == pytest.approx(lp.mlu, rel=1e-6)
        assert opt.conservation_error_bps < 1e-6 * tm.total_bps


def test_solvers_agree_and_reject_bad_input():
    t = topo_of([("a", "b", 10), ("b", "c", 10), ("c", "a", 10), ("c", "d", 5)])
    tm = generate(t, "gravity", 1, seed=3)[0]
    ms = [solve_optimum(t, tm, solver=s).mlu for s in ("simplex", "ipm", "choose")]
    assert ms == pytest.approx([ms[0]] * 3, rel=1e-6)
    assert solve_optimum(t, np.zeros((4, 4))).mlu == 0.0
    with pytest.raises(ValueError, match="shape"):
        solve_optimum(t, np.ones((3, 3)))
    with pytest.raises(ValueError, match=">= 0"):
        solve_optimum(t, -np.ones((4, 4)))
    with pytest.raises(ValueError, match="shorten"):
        solve_optimum(t, tm, shorten="nope")


def test_unroutable_demand_is_an_lp_error():
    t = topo_of([("a", "b", 10), ("c", "d", 10)])
    with pytest.raises(LPError):
        solve_optimum(t, tm_of(t, {("a", "d"): 1.0}))
    with pytest.raises(LPError):
        solve_optimum(t, tm_of(t, {("a", "d"): 1.0}), tree_start=True)


def test_decomposition_is_loop_free_carries_all_demand_and_reaches_the_optimum():
    g = nx.grid_2d_graph(4, 4)
    t = Topology.from_networkx(nx.relabel_nodes(g, {v: f"{v[0]}_{v[1]}" for v in g}), name="grid4")
    for tm in generate(t, "hotspot", 2, seed=5):
        best = solve_optimum(t, tm).mlu
        for shorten in (None, "hop"):
            r = solve_optimum(t, tm, shorten=shorten)
            flows = decompose_flows(t, tm, r)
            d = tm.demand_bps
            assert set(flows) == {(s, e) for s, e in zip(*np.nonzero(d))}
            for (s, e), plist in flows.items():
                assert sum(b for _, b in plist) == pytest.approx(d[s, e], rel=1e-5)
                for nodes, _ in plist:
                    assert nodes[0] == s and nodes[-1] == e and len(set(nodes)) == len(nodes)
            ps = PathSet.from_node_paths(t, {key: [p for p, _ in v] for key, v in flows.items()})
            ps.check(t)
            lp = solve_min_mlu(t, ps, tm.pair_demands(ps.pairs))
            # The decomposed paths hold a routing as good as r's flows (r is within 1e-4 of the optimum
            # after the shorten pass), and no path set beats the optimum.
            assert best * (1 - 1e-6) <= lp.mlu <= r.mlu * (1 + 1e-6)


def test_shorten_keeps_mlu_and_shortens_routes():
    g = nx.grid_2d_graph(4, 4)
    t = Topology.from_networkx(nx.relabel_nodes(g, {v: f"{v[0]}_{v[1]}" for v in g}), name="grid4")
    tm = generate(t, "bimodal", 1, seed=2)[0]
    plain = solve_optimum(t, tm)
    short = solve_optimum(t, tm, shorten="hop", shorten_slack=1e-4)
    assert plain.mlu <= short.mlu <= plain.mlu * (1 + 1e-4) + 1e-12
    assert short.flows_bps.sum() <= plain.flows_bps.sum() * (1 + 1e-9)  # total hop x flow



def test_tree_start_reaches_the_same_optima():
    # Primal simplex from the fewest-hop routing reaches the same min MLU, and the same least total
    # hop x flow within that MLU cap, as dual simplex from scratch; also where a source cannot reach
    # every node.
    g = nx.grid_2d_graph(4, 4)
    t = Topology.from_networkx(nx.relabel_nodes(g, {v: f"{v[0]}_{v[1]}" for v in g}), name="grid4")
    for fam in ("gravity", "hotspot", "bimodal"):
        tm = generate(t, fam, 1, seed=7)[0]
        best = solve_optimum(t, tm)
        cold = solve_optimum(t, tm, shorten="hop")
        warm = solve_optimum(t, tm, tree_start=True)
        assert warm.mlu == pytest.approx(best.mlu, rel=1e-7)
        short = solve_optimum(t, tm, shorten="hop", tree_start=True)
        assert short.mlu <= best.mlu * (1 + 1e-4) + 1e-12
        assert short.flows_bps.sum() == pytest.approx(cold.flows_bps.sum(), rel=1e-6)
    # e feeds the ring and d drains it: no source reaches e, and d reaches nothing.
    spur = topo_of([("a", "b", 10), ("b", "c", 10), ("c", "a", 10), ("c", "d", 5), ("e", "a", 10)], directed=True)
    tm = tm_of(spur, {("a", "d"): 4.0, ("e", "d"): 1.0, ("b", "a"): 2.0})
    assert solve_optimum(spur, tm, tree_start=True).mlu == pytest.approx(solve_optimum(spur, tm).mlu, rel=1e-9)
