"""Controller routers (LP, ECMP, fallback chain, model without a server), the core state machine
(measure, route, fail over) and the GET /state API (no switches)."""

from __future__ import annotations

import numpy as np
import pytest
from tellm.controller.core import ControllerConfig, ControllerCore
from tellm.controller.failure import path_alive
from tellm.controller.planner import OpKind
from tellm.controller.routers import (
    ECMPRouter,
    FallbackRouter,
    LPRouter,
    RouterFailure,
    Routing,
    RoutingInput,
    make_router,
)

from tecore import check_split

from .controller_fixtures import diamond, diamond_paths


@pytest.fixture
def net():
    topo = diamond()
    return topo, diamond_paths(topo)


# ------------------------------------------------------------------ routers
def test_lp_and_ecmp_routers(net):
    topo, paths = net
    demand = np.zeros(paths.num_pairs)
    demand[paths.pair_lookup[0, 3]] = 15e6  # more than one 10 Mbit/s path can carry
    inp = RoutingInput(topo, paths, demand, np.ones(topo.num_links))
    lp = LPRouter().route(inp)
    ecmp = ECMPRouter().route(inp)
    check_split(paths, lp.split)
    check_split(paths, ecmp.split)
    assert lp.predicted_mlu == pytest.approx(0.75, rel=1e-4)
    assert lp.predicted_mlu <= ecmp.predicted_mlu + 1e-9
    up = np.ones(topo.num_links)
    up[topo.link_index[(1, 3)]] = 0
    for router in (LPRouter(), ECMPRouter()):
        r = router.route(RoutingInput(topo, paths, demand, up))
        assert np.all(r.split[~path_alive(paths, up)] == 0)
        check_split(paths, r.split)


class _Unavailable(Exception):
    pass


_Unavailable.__name__ = "InferenceUnavailable"


class _FlakyModel:
    name = "model"

    def __init__(self):
        self.fail = False
        self.calls = 0

    def route(self, inp):
        self.calls += 1
        if self.fail:
            raise RouterFailure("unavailable", "down")
        split = np.zeros(inp.paths.num_paths)
        split[inp.paths.pair_ptr[:-1]] = 1.0
        return Routing(split, "model", 0.0, 0.0)


def test_fallback_chain_keeps_last_good_then_lp(net):
    topo, paths = net
    reasons = []
    model = _FlakyModel()
    fr = FallbackRouter(model, topo.num_nodes, keep_last_seconds=60, on_fallback=reasons.append)
    demand = np.full(paths.num_pairs, 1e6)
    inp = RoutingInput(topo, paths, demand, np.ones(topo.num_links))
    assert fr.route(inp).router == "model"
    model.fail = True
    r = fr.route(inp)
    assert r.router == "model:last-good" and reasons == ["unavailable"]
    up = np.ones(topo.num_links)
    up[0] = 0  # link state changed: the last routing is stale -> LP (4 nodes <= 60)
    r = fr.route(RoutingInput(topo, paths, demand, up))
    assert r.router == "lp" and reasons == ["unavailable", "unavailable"]
    assert np.all(r.split[~path_alive(paths, up)] == 0)


def test_model_router_without_server_falls_back(net):
    topo, paths = net
    reasons, durations = [], []
    router = make_router("model", topo.num_nodes, inference_address="127.0.0.1:1",
                         inference_timeout_seconds=0.2, on_request=durations.append, on_fallback=reasons.append)
    r = router.route(RoutingInput(topo, paths, np.full(paths.num_pairs, 1e6), np.ones(topo.num_links)))
    assert r.router == "lp" and reasons and reasons[0] in ("unavailable", "error")
    with pytest.raises(ValueError):
        make_router("magic", 4)


# ------------------------------------------------------------------ core
def _core(net, router=None):
    topo, paths = net
    core = ControllerCore(topo, paths, {"s1": 1, "s2": 2, "s3": 3, "s4": 4}, router or LPRouter(),
                          config=ControllerConfig())
    for d in (1, 2, 3, 4):
        core.switch_connected(d)
    for (u, v), lid in topo.link_index.items():
        core.link_discovered(u + 1, 10 + v, v + 1, 10 + u)
    return core


def test_core_measures_routes_and_fails_over(net):
    topo, paths = net
    core = _core(net)
    assert core.link_up().all()
    assert not core.link_discovered(1, 99, 7, 1)  # not in the topology: logged, ignored
    # Ingress counters of s1: 15 Mbit/s to s4.
    core.class_stats(1, np.array([2, 3, 4]), np.array([0, 0, 0]), 0.0)
    core.class_stats(1, np.array([2, 3, 4]), np.array([0, 0, 15e6 / 8]), 1.0)
    # Port counters (port to node index v is 10 + v): s1's ports to s2 (11) and s3 (12) carried
    # 7.5 Mbit/s each; port 1 is a host port (ignored).
    core.port_stats(1, np.array([12, 1, 11]), np.array([0, 0, 0]), 0.0)
    core.port_stats(1, np.array([12, 1, 11]), np.array([7.5e6 / 8, 5, 7.5e6 / 8]), 1.0)
    inp = core.routing_input(1.0)
    assert inp.demand_bps[paths.pair_lookup[0, 3]] == pytest.approx(15e6)
    assert core.metrics.mlu._value.get() == pytest.approx(0.75)
    plan = core.apply_routing(core.router.route(inp), inp, 1.0)
    core.commit(plan)
    groups = plan.after.groups
    assert len(groups) == 12  # one per ordered pair
    b = groups[(1, 4)][1]
    assert sorted(x.weight for x in b) == [128, 128]  # LP splits 15 Mbit/s evenly over the two paths
    assert core.metrics.group_updates._value.get() == 12
    # Port s1:11 (to s2) goes down: local renormalisation without the router.
    assert core.port_state(1, 11, up=False)
    fo = core.failover_plan()
    assert [x.port for x in fo.after.groups[(1, 4)][1]] == [12]
    assert all(x.port != 11 for (s, _), (_, bs) in fo.after.groups.items() if s == 1 for x in bs)
    kinds = [op.kind for op in fo.ops]
    assert OpKind.DELETE_GROUP in kinds and kinds.index(OpKind.MODIFY_CLASS) < kinds.index(OpKind.DELETE_GROUP)
    core.commit(fo)
    core.snapshot = core.make_snapshot()
    snap = core.state_json()
    assert snap["router"] == "lp" and snap["mlu"] == pytest.approx(0.75)
    assert [p["weight"] for p in snap["groups"]["s1->s4"]] in ([0, 256], [256, 0])
    # Group counters give the realised split of the installed group (one bucket now).
    gid = core.installed.groups[(1, 4)][0]
    core.group_stats(1, gid, np.array([1000]), 1.0)
    core.group_stats(1, gid, np.array([5000]), 2.0)
    core.snapshot = core.make_snapshot()
    used = [p for p in core.state_json()["groups"]["s1->s4"] if p["weight"] > 0]
    assert [p["realised"] for p in used] == [1.0]
    assert snap["topology"]["links"][topo.link_index[(0, 1)]]["up"] is False
    import json
    json.dumps(snap)
    # Reconnect of s2: everything of s2 is reinstalled, nothing else.
    core.switch_connected(2)
    again = core.failover_plan()
    assert again.ops and {op.dpid for op in again.ops} == {2}
    assert core.learn_host("10.0.1.1", "00:00:0a:00:01:01", 1, 1)
    assert not core.learn_host("10.0.1.1", "00:00:0a:00:01:01", 1, 1)
    assert not core.learn_host("10.0.2.1", "00:00:0a:00:02:01", 1, 12)  # a link port is not a host port


def test_core_rejects_missing_dpids(net):
    topo, paths = net
    with pytest.raises(ValueError, match="datapath id"):
        ControllerCore(topo, paths, {"s1": 1}, ECMPRouter())


def test_state_api_serves_json_and_404():
    import json
    import socket
    import urllib.error
    import urllib.request

    from tellm.controller.api import serve_state

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = serve_state(lambda: {"mlu": 0.5, "router": "lp"}, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/state", timeout=5) as r:
            assert json.load(r) == {"mlu": 0.5, "router": "lp"}
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
        assert err.value.code == 404
    finally:
        server.shutdown()
