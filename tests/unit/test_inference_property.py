"""Property test over a real server: random valid topologies, path sets, demands, link failures and
policies always produce valid split ratios, link loads consistent with them, and the MLU they imply."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ..inference_support import RunningServer, check_reply_contract, model_under_test

from tecore import Topology, compute_paths


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path, _ = model_under_test(tmp_path_factory.mktemp("model"))
    s = RunningServer(path, watch_interval_seconds=0)
    yield s
    s.stop()


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    g = nx.path_graph(n)  # connected backbone, plus random extra links
    extra = draw(st.integers(0, n * (n - 1) // 2))
    for _ in range(extra):
        u, v = rng.choice(n, size=2, replace=False)
        g.add_edge(int(u), int(v))
    directed = g.to_directed()
    if draw(st.booleans()):  # sometimes drop one direction of a few links (asymmetric networks)
        for u, v in list(directed.edges)[: draw(st.integers(0, 2))]:
            if directed.has_edge(v, u) and nx.is_strongly_connected(nx.restricted_view(directed, [], [(u, v)])):
                directed.remove_edge(u, v)
    for u, v in directed.edges:
        directed.edges[u, v]["capacity_bps"] = float(10 ** rng.uniform(6, 11))
        directed.edges[u, v]["latency_seconds"] = float(rng.uniform(0, 0.05))
    topo = Topology.from_networkx(directed, name=f"h{seed}")
    k = draw(st.integers(1, 4))
    paths = compute_paths(topo, k=k, workers=1, use_cache=False)
    kind = draw(st.sampled_from(["dense", "sparse", "zero", "huge"]))
    demand = rng.uniform(0, 1e9, paths.num_pairs)
    if kind == "sparse":
        demand[rng.random(paths.num_pairs) < 0.7] = 0
    elif kind == "zero":
        demand[:] = 0
    elif kind == "huge":
        demand *= 1e3  # far beyond capacity: MLU >> 1 must still be reported correctly
    down = rng.random(topo.num_links) < draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    link_up = None if not down.any() else ~down
    return topo, paths, demand.astype(np.float32), link_up


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(scenario=scenarios())
def test_random_valid_requests_give_valid_splits(served, scenario):
    topo, paths, demand, link_up = scenario
    handle = served.client.register_topology(topo, paths, topology_id="property")
    reply = served.client.route(handle, demand, link_up=link_up)
    check_reply_contract(topo, paths, demand, link_up, reply)
