"""Incremental path sets: a topology change recomputes only the pairs it touches, and the result is a
valid, fully covering path set of the new topology."""

from __future__ import annotations

import networkx as nx
import pytest

from tecore import PathError, Topology, compute_paths
from tecore.coverage import coverage
from tecore.incremental import update_paths


def topo_of(g: nx.Graph, name: str) -> Topology:
    return Topology.from_networkx(nx.relabel_nodes(g, str), name=name)


def pair_paths(t: Topology, ps) -> dict[tuple[str, str], list[tuple[str, ...]]]:
    return {(t.nodes[s], t.nodes[d]): [tuple(t.nodes[x] for x in ps.path_nodes(t, j))
                                       for j in range(ps.pair_ptr[i], ps.pair_ptr[i + 1])]
            for i, (s, d) in enumerate(ps.pairs.tolist())}


@pytest.fixture
def mesh():
    g = nx.connected_watts_strogatz_graph(14, 4, 0.3, seed=2)
    return g, topo_of(g, "mesh")


def test_unchanged_topology_keeps_the_set(mesh):
    _, t = mesh
    ps = compute_paths(t, use_cache=False, workers=1)
    assert update_paths(ps, t, t) is ps
    with pytest.raises(PathError, match="old topology"):
        update_paths(ps, topo_of(nx.path_graph(3), "line"), t)


def test_link_loss_recomputes_only_pairs_that_crossed_it(mesh):
    g, t = mesh
    ps = compute_paths(t, use_cache=False, workers=1)
    u, v = max(g.edges, key=lambda e: nx.edge_betweenness_centrality(g)[e])
    g2 = g.copy()
    g2.remove_edge(u, v)
    t2 = topo_of(g2, "mesh-cut")
    new = update_paths(ps, t, t2)
    new.check(t2)
    assert new.topology_hash == t2.content_hash and coverage(t2, new).full
    assert new.num_pairs == 14 * 13
    before, after = pair_paths(t, ps), pair_paths(t2, new)
    crossed = {p for p, plist in before.items()
               if any(any({a, b} == {str(u), str(v)} for a, b in zip(q, q[1:])) for q in plist)}
    assert crossed and len(crossed) < len(before)
    for p in before:
        if p not in crossed:
            dist_same = nx.shortest_path_length(g, int(p[0]), int(p[1])) == nx.shortest_path_length(g2, int(p[0]), int(p[1]))
            if dist_same:
                assert after[p] == before[p]  # untouched pairs keep their (seeded) paths exactly
        else:
            assert all(not any({a, b} == {str(u), str(v)} for a, b in zip(q, q[1:])) for q in after[p])


def test_new_switch_and_shortcut_get_paths_and_coverage(mesh):
    g, t = mesh
    ps = compute_paths(t, use_cache=False, workers=1)
    g2 = g.copy()
    g2.add_edge(0, 99)
    g2.add_edge(99, 7)
    g2.add_edge(3, 10)
    t2 = topo_of(g2, "mesh-grown")
    new = update_paths(ps, t, t2)
    new.check(t2)
    assert new.num_pairs == 15 * 14 and coverage(t2, new).full
    # every first path is a shortest path of the new network (the shortcut is used where it helps)
    hops = new.path_hops[new.pair_ptr[:-1]]
    want = [nx.shortest_path_length(g2, int(t2.nodes[s]), int(t2.nodes[d])) for s, d in new.pairs.tolist()]
    assert hops.tolist() == want


def test_discovery_builds_later_sets_incrementally(mesh, monkeypatch):
    from tellm.controller.discovery import TopologyDiscovery
    import tellm.controller.discovery as disc

    g, t = mesh
    d = TopologyDiscovery(10e9)
    first = d.paths_for(t)
    calls = []
    monkeypatch.setattr(disc, "update_paths", lambda *a: calls.append(a) or update_paths(*a))
    g2 = g.copy()
    g2.remove_edge(*next(iter(g.edges)))
    t2 = topo_of(g2, "mesh-cut")
    second = d.paths_for(t2)
    assert calls and calls[0][0] is first and second.topology_hash == t2.content_hash
