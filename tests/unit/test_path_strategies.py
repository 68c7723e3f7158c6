"""Path strategies: invariants (loop-free, valid links, at most k, k when k exist, stretch bound),
determinism, what each strategy is for, GraphML capacities, and the `tellm paths` / `tellm eval` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

from tecore import Topology, generate, load_topology, solve_min_mlu
from tecore.optimum import solve_optimum
from tecore.paths import compute_paths
from tecore.seeded import SEED_FAMILIES, SEED_TM_OFFSET, SEED_TMS_PER_FAMILY
from tecore.strategies import STRATEGIES
from tecore.stretch import path_stretch


def grid(n=4):
    g = nx.grid_2d_graph(n, n)
    return Topology.from_networkx(nx.relabel_nodes(g, {v: f"{v[0]}_{v[1]}" for v in g}), name=f"grid{n}")


def ladder():
    # Two rails of 5 nodes with rungs: many simple paths per pair, unequal lengths.
    g = nx.ladder_graph(5)
    rng = np.random.default_rng(0)
    for u, v in g.edges:
        g.edges[u, v]["capacity_bps"] = float(rng.choice([1e9, 10e9]))
    return Topology.from_networkx(nx.relabel_nodes(g, str), name="ladder5")


def simple_path_counts(t):
    g = nx.DiGraph(list(zip(t.src.tolist(), t.dst.tolist())))
    n = t.num_nodes
    return {(s, d): sum(1 for _ in nx.all_simple_paths(g, s, d)) for s in range(n) for d in range(n) if s != d}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("k", [2, 5, 16])
def test_invariants(strategy, k):
    t = ladder()
    ps = compute_paths(t, k=k, strategy=strategy, use_cache=False, workers=1)
    ps.check(t)  # loop-free walks over existing links from src to dst
    counts = simple_path_counts(t)
    assert ps.num_pairs == len(counts)
    per_pair = dict(zip(map(tuple, ps.pairs.tolist()), ps.paths_per_pair.tolist()))
    for pair, n_simple in counts.items():
        assert per_pair[pair] == min(k, n_simple)  # k per pair, or all there are
    # no pair lists the same path twice
    for i in range(ps.num_pairs):
        links = [tuple(ps.path_links[ps.path_ptr[j]:ps.path_ptr[j + 1]]) for j in range(ps.pair_ptr[i], ps.pair_ptr[i + 1])]
        assert len(set(links)) == len(links)
    # each pair's first path is a hop-shortest one (capacity: a least inverse-capacity one)
    first = ps.pair_ptr[:-1]
    if strategy == "capacity":
        invcap = t.capacity_bps.max() / t.capacity_bps
        cost = ps.path_cost(invcap)
        assert np.allclose(cost[first], np.minimum.reduceat(cost, first))
    else:
        assert np.allclose(path_stretch(t, ps, "hop")[first], 1.0)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("bound, metric", [(1.0, "hop"), (1.5, "hop"), (2.0, "latency")])
def test_stretch_bound_is_held(strategy, bound, metric):
    t = grid(4)
    if metric == "latency":  # give links unequal latencies so the bound means something
        rng = np.random.default_rng(1)
        lat = {}
        for u, v in zip(t.src.tolist(), t.dst.tolist()):
            lat.setdefault((min(u, v), max(u, v)), rng.uniform(1e-3, 5e-3))  # same both ways
        full = np.array([lat[(min(u, v), max(u, v))] for u, v in zip(t.src.tolist(), t.dst.tolist())])
        t = Topology(t.name, t.nodes, t.src, t.dst, t.capacity_bps, t.weight, full)
    ps = compute_paths(t, k=6, strategy=strategy, use_cache=False, workers=1, max_stretch=bound,
                       stretch_metric=metric)
    ps.check(t)
    s = path_stretch(t, ps, metric)
    assert s.max() <= bound * (1 + 1e-9)
    assert np.all(ps.paths_per_pair >= 1)
    if bound == 1.0 and metric == "hop":  # only shortest paths: a 4x4 grid pair (0,0)->(3,3) has 20
        assert ps.paths_per_pair.max() == 6


def test_bound_in_cli_and_api_rejects_nonsense():
    from tecore import PathError

    with pytest.raises(PathError, match="max_stretch"):
        compute_paths(grid(3), max_stretch=0.5)
    with pytest.raises(PathError, match="stretch metric"):
        compute_paths(grid(3), max_stretch=2, stretch_metric="furlongs")


def test_deterministic_for_a_fixed_seed():
    t = ladder()
    a = compute_paths(t, k=4, strategy="optimum-seeded", use_cache=False, workers=1, seed=3)
    b = compute_paths(t, k=4, strategy="optimum-seeded", use_cache=False, workers=2, seed=3)
    assert np.array_equal(a.pairs, b.pairs) and np.array_equal(a.pair_ptr, b.pair_ptr)
    assert np.array_equal(a.path_links, b.path_links)
    c = compute_paths(t, k=4, strategy="edge-disjoint", use_cache=False, workers=1)
    d = compute_paths(t, k=4, strategy="edge-disjoint", use_cache=False, workers=2)
    assert np.array_equal(c.path_links, d.path_links)


def test_capacity_strategy_prefers_fat_links():
    # a-b thin (1 Gbit/s) direct; a-c-b fat (100 Gbit/s): inverse-capacity weights put a-c-b first.
    g = nx.Graph()
    g.add_edge("a", "b", capacity_bps=1e9)
    g.add_edge("a", "c", capacity_bps=100e9)
    g.add_edge("c", "b", capacity_bps=100e9)
    t = Topology.from_networkx(g, name="fat")
    ps = compute_paths(t, k=1, strategy="capacity", use_cache=False, workers=1)
    i = ps.pair_lookup[t.node_index["a"], t.node_index["b"]]
    assert [t.nodes[x] for x in ps.path_nodes(t, ps.pair_ptr[i])] == ["a", "c", "b"]
    hop = compute_paths(t, k=1, strategy="shortest", use_cache=False, workers=1)
    assert hop.path_hops[hop.pair_ptr[i]] == 1


def test_optimum_seeded_reaches_the_optimum_on_its_seed_tms():
    # With room for every decomposed path, the path LP on the very TMs the set was seeded with must hit
    # the exact optimum (the decomposition is a feasible routing over the chosen paths).
    t = ladder()
    ps = compute_paths(t, k=16, strategy="optimum-seeded", use_cache=False, workers=1, seed=0)
    for fam in SEED_FAMILIES:
        for tm in generate(t, fam, SEED_TMS_PER_FAMILY, seed=SEED_TM_OFFSET):
            opt = solve_optimum(t, tm).mlu
            lp = solve_min_mlu(t, ps, tm.pair_demands(ps.pairs)).mlu
            assert lp == pytest.approx(opt, rel=2e-4)


def test_optimum_seeded_beats_hop_shortest_where_shortest_is_poor():
    # A 6x3 grid with thin "short" middle row: hop-shortest k=2 crowds it, the optimum avoids it.
    g = nx.grid_2d_graph(6, 3)
    for u, v in g.edges:
        g.edges[u, v]["capacity_bps"] = 1e9 if u[1] == v[1] == 1 else 10e9
    t = Topology.from_networkx(nx.relabel_nodes(g, {v: f"{v[0]}_{v[1]}" for v in g}), name="thinmid")
    tms = generate(t, "gravity", 3, seed=0)  # not the seeding TMs
    seeded = compute_paths(t, k=2, strategy="optimum-seeded", use_cache=False, workers=1)
    short = compute_paths(t, k=2, strategy="shortest", use_cache=False, workers=1)
    r_seed = [solve_min_mlu(t, seeded, tm.pair_demands(seeded.pairs)).mlu / solve_optimum(t, tm).mlu for tm in tms]
    r_short = [solve_min_mlu(t, short, tm.pair_demands(short.pairs)).mlu / solve_optimum(t, tm).mlu for tm in tms]
    assert np.mean(r_seed) < np.mean(r_short)


def test_graphml_capacity_bps_undirected_gives_both_directions(tmp_path):
    g = nx.Graph()
    g.add_edge("a", "b", capacity_bps=2.5e9)
    g.add_edge("b", "c", capacity_bps=40e9)
    f = tmp_path / "u.graphml"
    nx.write_graphml(g, f)
    t = load_topology(str(f))
    ix, li = t.node_index, t.link_index
    assert t.num_links == 4
    for u, v, cap in [("a", "b", 2.5e9), ("b", "a", 2.5e9), ("b", "c", 40e9), ("c", "b", 40e9)]:
        assert t.capacity_bps[li[(ix[u], ix[v])]] == cap


def test_graphml_capacity_bps_directed_gives_one_direction(tmp_path):
    g = nx.DiGraph()
    g.add_edge("a", "b", capacity_bps=2.5e9)
    g.add_edge("b", "a", capacity_bps=1e9)
    g.add_edge("b", "c", capacity_bps=40e9)
    f = tmp_path / "d.graphml"
    nx.write_graphml(g, f)
    t = load_topology(str(f))
    ix, li = t.node_index, t.link_index
    assert t.num_links == 3 and (ix["c"], ix["b"]) not in li
    assert t.capacity_bps[li[(ix["a"], ix["b"])]] == 2.5e9
    assert t.capacity_bps[li[(ix["b"], ix["a"])]] == 1e9
    assert t.capacity_bps[li[(ix["b"], ix["c"])]] == 40e9


# ---------------------------------------------------------------------- CLI
def tellm(*args):
    return subprocess.run([sys.executable, "-m", "tellm", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def ladder_file(tmp_path):
    g = nx.ladder_graph(4)
    for u, v in g.edges:
        g.edges[u, v]["capacity_bps"] = 10e9 if u % 2 else 2.5e9
    f = tmp_path / "ladder4.graphml"
    nx.write_graphml(nx.relabel_nodes(g, lambda x: f"n{x}"), f)
    return f


def test_cli_paths_report_out_json(ladder_file, tmp_path):
    out, js = tmp_path / "paths.json", tmp_path / "report.json"
    r = tellm("paths", "--topology", str(ladder_file), "--k", "3", "--paths-strategy", "optimum-seeded",
              "--max-stretch", "2", "--out", str(out), "--report", "--report-k", "2,3",
              "--report-strategies", "shortest,optimum-seeded", "--tms-per-family", "1", "--json", str(js))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    t = load_topology(str(ladder_file))
    assert doc["strategy"] == "optimum-seeded" and doc["k"] == 3
    assert len(doc["paths"]) == t.num_nodes * (t.num_nodes - 1)
    li = t.link_index
    for key, plist in doc["paths"].items():
        src, dst = key.split("->")
        assert 1 <= len(plist) <= 3
        for nodes in plist:
            assert nodes[0] == src and nodes[-1] == dst and len(set(nodes)) == len(nodes)
            assert all((t.node_index[a], t.node_index[b]) in li for a, b in zip(nodes, nodes[1:]))
    rep = json.loads(js.read_text())
    assert rep["stretch_max"] <= 2.0
    assert [(x["strategy"], x["k"]) for x in rep["report"]] == [
        ("shortest", 2), ("shortest", 3), ("optimum-seeded", 2), ("optimum-seeded", 3)]
    for x in rep["report"]:
        assert len(x["rows"]) == 3 and x["ratio_worst"] >= x["ratio_geomean"] >= 1 - 1e-6
        assert set(x["ratio_by_family"]) == {"gravity", "hotspot", "bimodal"}
        assert x["stretch_max"] <= 2.0
    assert "path-LP / exact optimum" in r.stdout


def test_cli_eval_reports_opt_and_ratios(ladder_file, tmp_path):
    js = tmp_path / "eval.json"
    r = tellm("eval", "--topology", str(ladder_file), "--count", "2", "--tm", "hotspot", "--json", str(js))
    assert r.returncode == 0, r.stderr
    doc = json.loads(js.read_text())
    assert doc["routers"] == ["ecmp", "lp", "opt"]
    for row in doc["rows"]:
        assert row["mlu_opt"] <= row["mlu_lp"] * (1 + 1e-6) and row["mlu_opt"] <= row["mlu_ecmp"] * (1 + 1e-6)
        assert row["mlu_lp_over_opt"] == pytest.approx(row["mlu_lp"] / row["mlu_opt"])
        assert row["mlu_ecmp_over_opt"] == pytest.approx(row["mlu_ecmp"] / row["mlu_opt"])
    assert doc["summary"]["lp_over_opt_geomean"] >= 1 - 1e-6


def test_cli_paths_rejects_bad_options(ladder_file):
    r = tellm("paths", "--topology", str(ladder_file), "--max-stretch", "0.5")
    assert r.returncode != 0 and "max-stretch" in r.stderr and "Traceback" not in r.stderr
    r = tellm("paths", "--topology", str(ladder_file), "--report", "--report-strategies", "nope")
    assert r.returncode != 0 and "unknown strategy" in r.stderr and "Traceback" not in r.stderr


def test_optimum_seeded_falls_back_on_graphs_too_big_to_seed(monkeypatch):
    import tecore.seeded as seeded_mod

    t = ladder()
    monkeypatch.setattr(seeded_mod, "SEED_MAX_LP_COLUMNS", t.num_nodes * t.num_links - 1)
    with pytest.warns(UserWarning, match="using diverse paths only"):
        ps = compute_paths(t, k=3, strategy="optimum-seeded", use_cache=False, workers=1)
    ref = compute_paths(t, k=3, strategy="diverse", use_cache=False, workers=1)
    assert ps.strategy == "diverse" and np.array_equal(ps.path_links, ref.path_links)


def test_diverse_paths_are_the_same_for_any_number_of_workers():
    g = nx.connected_watts_strogatz_graph(50, 4, 0.3, seed=5)
    t = Topology.from_networkx(nx.relabel_nodes(g, str), name="ws50")
    a = compute_paths(t, k=4, strategy="diverse", use_cache=False, workers=1)
    b = compute_paths(t, k=4, strategy="diverse", use_cache=False, workers=2)
    assert np.array_equal(a.pair_ptr, b.pair_ptr) and np.array_equal(a.path_links, b.path_links)
