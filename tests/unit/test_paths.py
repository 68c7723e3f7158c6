"""Candidate paths: loop-free, valid, at most k per pair, cached, identical across worker counts."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from tecore import PathError, PathSet, Topology, compute_paths, load_topology
from tecore.paths import cache_dir


def grid(n=3):
    g = nx.grid_2d_graph(n, n)
    return Topology.from_networkx(nx.relabel_nodes(g, {v: f"{v[0]}_{v[1]}" for v in g}), name=f"grid{n}")


def ring(n=4):
    return Topology.from_networkx(nx.cycle_graph(n), name=f"ring{n}")


def test_ring_has_exactly_two_paths_per_pair():
    t = ring(4)
    ps = compute_paths(t, k=4, use_cache=False, workers=1)
    ps.check(t)
    assert ps.num_pairs == 12
    assert np.all(ps.paths_per_pair == 2)
    # shortest first: the first path of each pair is never longer than the second
    first = ps.path_hops[ps.pair_ptr[:-1]]
    second = ps.path_hops[ps.pair_ptr[:-1] + 1]
    assert np.all(first <= second) and np.all(first + second == 4)


def test_k_shortest_on_grid_matches_networkx():
    t = grid(3)
    ps = compute_paths(t, k=3, strategy="shortest", use_cache=False, workers=1)
    ps.check(t)
    assert np.all(ps.paths_per_pair == 3)
    g = t.to_networkx()
    for i in range(0, ps.num_pairs, 7):
        s, d = ps.pairs[i]
        want = [len(p) - 1 for p in nx.shortest_simple_paths(g, t.nodes[s], t.nodes[d])][:3]
        got = ps.path_hops[ps.pair_ptr[i]:ps.pair_ptr[i + 1]].tolist()
        assert got == want


def test_mirrored_and_parallel_results_equal_direct_search():
    t = grid(3)
    a = compute_paths(t, k=4, use_cache=False, workers=1)
    b = compute_paths(t, k=4, use_cache=False, workers=2, pairs=t.all_pairs())  # no mirroring
    assert np.array_equal(a.pairs, b.pairs)
    assert np.array_equal(np.sort(a.path_cost(t.weight)), np.sort(b.path_cost(t.weight)))


def test_edge_disjoint_first_is_disjoint_where_possible():
    t = grid(3)
    ps = compute_paths(t, k=2, strategy="edge-disjoint", use_cache=False, workers=1)
    ps.check(t)
    for i in range(ps.num_pairs):
        a = set(ps.path_links[ps.path_ptr[ps.pair_ptr[i]]:ps.path_ptr[ps.pair_ptr[i] + 1]].tolist())
        b = set(ps.path_links[ps.path_ptr[ps.pair_ptr[i] + 1]:ps.path_ptr[ps.pair_ptr[i] + 2]].tolist())
        assert not a & b  # a 3x3 grid is 2-edge-connected


def test_incidence_is_sparse_path_link_matrix():
    t = ring(4)
    ps = compute_paths(t, k=2, use_cache=False, workers=1)
    inc = ps.incidence
    assert inc.shape == (ps.num_paths, t.num_links)
    assert np.array_equal(np.asarray(inc.sum(axis=1)).ravel(), ps.path_hops)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("TELLM_CACHE_DIR", str(tmp_path))
    t = grid(3)
    a = compute_paths(t, k=2, workers=1)
    files = list(cache_dir().glob("*.npz"))
    assert len(files) == 1 and t.content_hash in files[0].name
    b = compute_paths(t, k=2, workers=1)
    assert np.array_equal(a.path_links, b.path_links)
    files[0].write_bytes(b"garbage")  # a broken cache is recomputed, not fatal
    c = compute_paths(t, k=2, workers=1)
    assert np.array_equal(a.path_links, c.path_links)


def test_check_catches_a_wrong_topology_and_bad_paths():
    t = ring(4)
    ps = compute_paths(t, k=2, use_cache=False, workers=1)
    with pytest.raises(PathError, match="built for topology"):
        ps.check(ring(5))
    with pytest.raises(PathError, match="missing link"):
        PathSet.from_node_paths(t, {(0, 2): [[0, 2]]})
    with pytest.raises(PathError, match="unknown path strategy"):
        compute_paths(t, strategy="nope")


@pytest.mark.data
def test_real_topology_paths(data_dir):
    t = load_topology("Abilene")
    ps = compute_paths(t, k=4, workers=2)
    ps.check(t)
    assert ps.num_pairs == 110 and ps.paths_per_pair.max() == 4
