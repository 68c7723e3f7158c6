"""Single-failure coverage: the measure itself, the default path set's full coverage, failure scenarios,
and `tellm eval --fail-links` / `tellm paths` reporting them."""

from __future__ import annotations

import json
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest

from tecore import Topology, compute_paths, generate, load_topology, solve_min_mlu
from tecore.coverage import coverage
from tecore.failures import Failure, non_bridge_failures, parse_failures, routable_tm, stranded_pairs
from tecore.optimum import solve_optimum


def named(g: nx.Graph, name: str) -> Topology:
    return Topology.from_networkx(nx.relabel_nodes(g, str), name=name)


def test_coverage_counts_avoidable_links_only():
    # A 4-ring with a tail: 0-1-2-3-0 and 3-4. One path per pair (k=1) leaves every ring link the
    # pair crosses uncovered; the tail link 3-4 is a bridge and never counts.
    t = named(nx.Graph([(0, 1), (1, 2), (2, 3), (3, 0), (3, 4)]), "ringtail")
    one = compute_paths(t, k=1, strategy="shortest", use_cache=False, workers=1)
    c = coverage(t, one)
    assert c.groups == 5 and c.cutting_groups == 1
    # Ordered pairs: 20; the bridge cuts the 8 pairs with node 4 on one side only.
    assert c.pair_groups == 20 * 5 - 8
    ring = [i for i in range(one.num_pairs) if 4 not in one.pairs[i].tolist()]
    # every ring link a pair's only path crosses is an uncovered (pair, link): one per hop on the ring
    per_pair_ring_hops = sum(int(one.path_hops[one.pair_ptr[i]]) for i in ring)
    tail_pairs = [i for i in range(one.num_pairs) if 4 in one.pairs[i].tolist()]
    tail_ring_hops = sum(int(one.path_hops[one.pair_ptr[i]]) - 1 for i in tail_pairs)
    assert c.uncovered.shape[0] == per_pair_ring_hops + tail_ring_hops
    assert not c.full and c.covered == c.pair_groups - c.uncovered.shape[0]
    two = compute_paths(t, k=2, strategy="diverse", use_cache=False, workers=1)
    assert coverage(t, two).full


@pytest.mark.parametrize("strategy", ["diverse", "optimum-seeded"])
def test_default_strategies_cover_every_single_failure_of_meshy_graphs(strategy):
    rng = np.random.default_rng(4)
    for seed in range(3):
        g = nx.connected_watts_strogatz_graph(16, 3, 0.4, seed=seed)
        g.add_edge(0, 100)  # a leaf: its link is a bridge
        for u, v in g.edges:
            g.edges[u, v]["capacity_bps"] = float(rng.choice([1e9, 10e9]))
        t = named(g, f"ws{seed}")
        for k in (2, 4):
            ps = compute_paths(t, k=k, strategy=strategy, use_cache=False, workers=1)
            ps.check(t)
            c = coverage(t, ps)
            assert c.full, (strategy, k, c.summary(t))
            for f in non_bridge_failures(t):
                assert stranded_pairs(t, ps, f.link_up(t)).size == 0


def test_a_single_path_per_pair_strands_pairs_the_network_still_connects():
    t = named(nx.cycle_graph(5), "ring5")
    one = compute_paths(t, k=1, strategy="shortest", use_cache=False, workers=1)
    f = parse_failures(t, "0-1")[0]
    stranded = stranded_pairs(t, one, f.link_up(t))
    using = {i for i in range(one.num_pairs)
             if set(one.path_nodes(t, one.pair_ptr[i])) >= {0, 1}
             and abs(one.path_nodes(t, one.pair_ptr[i]).index(0) - one.path_nodes(t, one.pair_ptr[i]).index(1)) == 1}
    assert set(stranded.tolist()) == using and len(using) > 0
    assert coverage(t, compute_paths(t, k=2, use_cache=False, workers=1)).full


def test_failure_scenarios_parse_and_route():
    t = named(nx.Graph([(0, 1), (1, 2), (2, 0), (2, 3)]), "tri")
    assert [f.name for f in non_bridge_failures(t)] == ["0-1", "0-2", "1-2"]  # 2-3 is a bridge
    both = parse_failures(t, "0-1+2->1, 2-3")
    assert both[0] == Failure("0-1+2->1", tuple(sorted(both[0].groups))) and len(both[0].groups) == 2
    up = both[1].link_up(t)
    assert up.sum() == t.num_links - 2  # both directions of the cable
    tm = generate(t, "gravity", 1, seed=0)[0]
    ok = routable_tm(t, tm, up)
    assert ok.demand_bps[3].sum() == 0 and ok.demand_bps[:, 3].sum() == 0 and ok.demand_bps[0, 1] > 0
    with pytest.raises(ValueError, match="NODE-NODE"):
        parse_failures(t, "0-3")


@pytest.mark.data
@pytest.mark.parametrize("name", ["Abilene", "sndlib:geant", "Geant2012", "sndlib:germany50"])
def test_default_path_set_covers_every_single_failure(data_dir, name):
    t = load_topology(name, capacity="auto" if name.startswith("sndlib:") else "uniform")
    ps = compute_paths(t, workers=1)  # default strategy and k; cached for the session
    c = coverage(t, ps)
    assert c.full and c.ratio == 1.0, c.summary(t)


def tellm(*args):
    return subprocess.run([sys.executable, "-m", "tellm", *args], capture_output=True, text=True, timeout=300)


def test_cli_eval_fail_links_and_paths_coverage(tmp_path):
    g = nx.ladder_graph(4)
    for u, v in g.edges:
        g.edges[u, v]["capacity_bps"] = 10e9 if u % 2 else 2.5e9
    f = tmp_path / "ladder4.graphml"
    nx.write_graphml(nx.relabel_nodes(g, lambda x: f"n{x}"), f)
    js = tmp_path / "fail.json"
    r = tellm("eval", "--topology", str(f), "--tm", "gravity", "--count", "2", "--router", "ecmp,lp,shortest,opt",
              "--fail-links", "all-single", "--json", str(js))
    assert r.returncode == 0, r.stderr
    doc = json.loads(js.read_text())
    t = load_topology(str(f))
    assert len(doc["rows"]) == 2 * len(non_bridge_failures(t)) and doc["summary"]["stranded_pairs_max"] == 0
    for row in doc["rows"]:
        assert row["mlu_opt"] <= row["mlu_lp"] * (1 + 1e-6) <= row["mlu_ecmp"] * (1 + 1e-6) + 1e-9
    # One row recomputed directly: the optimum on the surviving network and the LP over live paths,
    # on the unscaled TM (the CLI scales TMs, which scales both MLUs by the same factor).
    from tecore.failures import surviving_topology

    row = doc["rows"][0]
    fail = parse_failures(t, row["failure"])[0]
    tm = [x for x in generate(t, "gravity", 2, seed=0) if x.label == row["tm"]][0]
    net, _ = surviving_topology(t, fail.link_up(t))
    opt = solve_optimum(net, routable_tm(t, tm, fail.link_up(t))).mlu
    lp = solve_min_mlu(t, *_live(t, fail, tm)).mlu
    assert row["mlu_opt"] / opt == pytest.approx(row["mlu_lp"] / lp, rel=1e-4)
    r = tellm("eval", "--topology", str(f), "--fail-links", "n0-n7")
    assert r.returncode != 0 and "--fail-links" in r.stderr and "Traceback" not in r.stderr
    r = tellm("paths", "--topology", str(f), "--json", "-")
    assert r.returncode == 0, r.stderr
    cov = json.loads(r.stdout)["coverage"]
    assert cov["ratio"] == 1.0 and cov["stranding_failures"] == {}


def _live(t, fail, tm):
    from tellm.controller.failure import restrict_paths

    ps = compute_paths(t, workers=1)
    up = fail.link_up(t)
    d = routable_tm(t, tm, up).pair_demands(ps.pairs)
    d[stranded_pairs(t, ps, up)] = 0.0
    return restrict_paths(ps, up).paths, d
