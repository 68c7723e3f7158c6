"""Specialised heads are built in the background: RegisterTopology returns at once, the generic graph
answers until the topology's head is built, GetModelInfo and the metrics say which graph serves, a
replaced topology's build is dropped and a failed build leaves the generic graph serving.

The real server with the shipped model; the only intervention is a gate (or a failure) put in front
of the real build, so that "before the head is built" is a state the test holds, not a race."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tecore import Topology

from ..inference_support import RunningServer, demands, model_under_test, paths_for, ring_topology, scrape


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path, is_reference = model_under_test(tmp_path_factory.mktemp("model"))
    if is_reference:
        pytest.skip("the reference model has no specialised head")
    s = RunningServer(path, watch_interval_seconds=0)
    yield s
    s.stop()


@pytest.fixture
def gate(served):
    """Holds every specialised build until set; the build itself is the real one."""
    builds = served.server.servicer.fast.builds
    real, opened = builds.build, threading.Event()

    def held(model, topo, check):
        opened.wait(60)
        return real(model, topo, check)

    builds.build = held
    yield opened
    opened.set()
    assert builds.wait_idle(120)
    builds.build = real


def graphs(served) -> dict:
    return {g.topology_id: g for g in served.client.model_info().topology_graphs}


def head_labels(served, topology_id: str) -> set:
    return {dict(labels)["layout"] for (name, labels), v in scrape(served.server.metrics_port).items()
            if name == "tellm_inference_topology_head_info" and dict(labels)["topology"] == topology_id and v == 1}


def test_generic_graph_answers_until_the_specialised_head_is_built(served, gate):
    topo = ring_topology(7, chords=2, seed=3)
    paths = paths_for(topo, k=3)
    handle = served.client.register_topology(topo, paths, topology_id="bg")
    g = graphs(served)["bg"]
    assert (g.layout, g.building, g.build_seconds, g.topology_version) == ("generic", True, 0.0, handle.version)
    assert (g.mlp_dtype, list(g.cuda_graph_batches)) == ("", [])
    assert head_labels(served, "bg") == {"generic"}
    d = demands(paths, seed=4)
    up = np.ones(topo.num_links, bool)
    up[0] = False
    first = served.client.route(handle, d, link_up=up, policy=[0.2, 0.3, 0.0, 0.0])  # no head exists yet

    gate.set()
    assert served.server.servicer.fast.wait_builds(120)
    g = graphs(served)["bg"]
    assert g.layout == "dense" and g.provider == "cpu" and not g.building and g.build_seconds > 0
    assert (g.mlp_dtype, list(g.cuda_graph_batches)) == ("float32", [])  # no CUDA graphs on the CPU
    assert head_labels(served, "bg") == {"dense"}
    later = served.client.route(handle, d, link_up=up, policy=[0.2, 0.3, 0.0, 0.0])
    assert np.abs(later.split - first.split).max() < 1e-4
    assert later.mlu == pytest.approx(first.mlu, rel=1e-5)
    np.testing.assert_allclose(later.link_load_bps / topo.capacity_bps, first.link_load_bps / topo.capacity_bps,
                               atol=1e-5)


def test_a_replaced_topologys_build_is_dropped(served, gate):
    topo = ring_topology(6, chords=1, seed=5)
    paths = paths_for(topo, k=2)
    served.client.register_topology(topo, paths, topology_id="swap")
    fast, store = served.server.servicer.fast, served.server.topologies
    old = store.peek("swap")
    wider = Topology(name=topo.name, nodes=topo.nodes, src=topo.src, dst=topo.dst,
                     capacity_bps=topo.capacity_bps * 2, weight=topo.weight, latency_seconds=topo.latency_seconds)
    handle = served.client.register_topology(wider, paths, topology_id="swap")  # new content, new version
    new = store.peek("swap")
    assert new is not old and handle.version == 2
    gate.set()
    assert fast.wait_builds(120)
    model = served.server.models.current
    assert fast.cache.get(model, old) is None  # the first registration's build never served
    assert fast.cache.get(model, new) is not None
    assert graphs(served)["swap"].layout == "dense"
    served.client.route(handle, demands(paths, seed=1))


def test_a_failed_build_leaves_the_generic_graph_serving(served):
    builds = served.server.servicer.fast.builds
    real = builds.build

    def fails(model, topo, check):
        raise MemoryError("no memory for the tables")

    builds.build = fails
    try:
        topo = ring_topology(5, chords=1, seed=7)
        paths = paths_for(topo, k=2)
        handle = served.client.register_topology(topo, paths, topology_id="fails")
        assert builds.wait_idle(60)
        reply = served.client.route(handle, demands(paths, seed=2))
        assert np.isfinite(reply.split).all() and reply.mlu > 0
        assert builds.wait_idle(60)
        g = graphs(served)["fails"]
        assert (g.layout, g.building) == ("generic", False)  # tried once, not again on every Route
        assert head_labels(served, "fails") == {"generic"}
    finally:
        builds.build = real


def test_model_info_without_specialised_heads(tmp_path):
    path, _ = model_under_test(tmp_path)
    s = RunningServer(path, watch_interval_seconds=0, specialise=False)
    try:
        topo = ring_topology(5, chords=1, seed=2)
        handle = s.client.register_topology(topo, paths_for(topo, k=2), topology_id="plain")
        info = s.client.model_info()
        (g,) = info.topology_graphs
        assert (g.topology_id, g.topology_version, g.layout, g.building) == ("plain", handle.version, "generic", False)
        assert g.provider == info.provider
    finally:
        s.stop()


def test_a_half_precision_head_serves_what_the_full_precision_head_serves(tmp_path, served):
    """``tellm serve --head-mlp-dtype float16``: the topology's head is built with a float16 MLP and answers
    within 1e-4 of the float32 head's MLU (the fixture's server) on the same request."""
    path, _ = model_under_test(tmp_path)
    s = RunningServer(path, watch_interval_seconds=0, head_mlp_dtype="float16")
    try:
        topo = ring_topology(8, chords=3, seed=9)
        paths = paths_for(topo, k=3)
        handles = [c.register_topology(topo, paths, topology_id="half") for c in (s.client, served.client)]
        assert s.server.servicer.fast.wait_builds(120) and served.server.servicer.fast.wait_builds(120)
        heads = [srv.server.servicer.fast.cache.get(srv.server.models.current, srv.server.topologies.peek("half"))
                 for srv in (s, served)]
        assert [h.mlp_dtype for h in heads] == ["float16", "float32"]  # auto is float32 on the CPU
        assert [g.mlp_dtype for g in s.client.model_info().topology_graphs if g.topology_id == "half"] == ["float16"]
        d = demands(paths, seed=6)
        half, full = (srv.client.route(h, d, policy=[0.2, 0.3, 0.0, 0.0]) for srv, h in zip((s, served), handles))
        assert half.mlu == pytest.approx(full.mlu, rel=1e-4)
        assert np.isfinite(half.split).all() and (half.split >= 0).all()
        np.testing.assert_allclose(np.bincount(paths.path_pair, half.split), 1.0, atol=1e-4)
    finally:
        s.stop()
