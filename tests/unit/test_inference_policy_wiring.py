"""The inference server hosts PolicyService: setting a policy changes what a Route that names none
returns, per topology, through the real server and the shipped TE head."""

from __future__ import annotations

import numpy as np
import pytest
from ..inference_support import RunningServer, demands, model_under_test, paths_for, ring_topology

from tellm.contract.policies import make_policy
from tellm.contract.policy_client import PolicyClient


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path, _ = model_under_test(tmp_path_factory.mktemp("model"))
    s = RunningServer(path, watch_interval_seconds=0)
    yield s
    s.stop()


def _mean_latency(paths, split, demand, path_latency):
    flow = split * demand[paths.path_pair]
    return float((flow * path_latency).sum() / flow.sum())


def test_set_policy_steers_routes_that_name_none(served):
    topo = ring_topology(8, chords=3, seed=4)
    # Give links different latencies so that a latency-aware policy has something to prefer.
    rng = np.random.default_rng(0)
    topo = type(topo)(topo.name, topo.nodes, topo.src, topo.dst, topo.capacity_bps, topo.weight,
                      rng.uniform(1e-3, 20e-3, topo.num_links))
    paths = paths_for(topo, k=3)
    h = served.client.register_topology(topo, paths, topology_id="ring8")
    other = served.client.register_topology(topo, paths, topology_id="other")
    d = demands(paths, seed=1)
    plain = served.client.route(h, d)
    pc = PolicyClient(served.address)
    try:
        assert pc.get_policy("ring8").policy.name == "min_mlu"
        applied, _previous = pc.set_policy(make_policy("latency_aware", {"weight": 1.0}), topology_id="ring8",
                                reason="test: prefer short paths")
        assert applied.policy.name == "latency_aware"
        steered = served.client.route(h, d)
        untouched = served.client.route(other, d)
    finally:
        pc.close()
    path_latency = paths.path_cost(topo.latency_seconds)
    assert not np.allclose(steered.split, plain.split, atol=1e-4)
    assert _mean_latency(paths, steered.split, d, path_latency) < _mean_latency(paths, plain.split, d, path_latency)
    np.testing.assert_allclose(untouched.split, plain.split, atol=1e-5)  # another topology keeps min-MLU
    np.testing.assert_allclose(np.bincount(paths.path_pair, steered.split), 1.0, atol=1e-5)
