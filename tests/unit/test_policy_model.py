"""The shipped TE head takes every policy's vector (the policy contract), and the per-policy
evaluation scores its split. Skipped with a reason when the model file is absent."""

from __future__ import annotations

import numpy as np
import pytest

from tecore import compute_paths
from tecore.objectives import evaluate_objective, solve_policy_lp
from tellm.contract.policies import POLICIES, make_policy
from tellm.inference.artifacts import DEFAULT_MODEL_PATH as MODEL
from tellm.inference.session import load_model
from tellm.policy.state import parse_controller_state
from tellm.policy.tools import topology_from_state

from ..policy_helpers import recorded_states

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="no shipped model inference/models/tellm-te.onnx")


def test_model_accepts_every_policy_vector():
    features = pytest.importorskip("tellm.contract.onnx_io")
    st = parse_controller_state(recorded_states()[-1])
    topo = topology_from_state(st.topology)
    paths = compute_paths(topo, k=4)
    demand = st.traffic_matrix_bps[paths.pairs[:, 0], paths.pairs[:, 1]]
    sess = load_model(MODEL, provider="cpu")
    for name in POLICIES:
        pol = make_policy(name)
        lam, h = pol.latency_weight, pol.headroom_fraction
        feeds = features.onnx_inputs(topo, paths, demand, policy=pol.to_vector())
        split = sess.route(feeds).split.astype(np.float64)
        assert np.all(split >= 0) and np.allclose(np.add.reduceat(split, paths.pair_ptr[:-1]), 1, atol=1e-4)
        v = evaluate_objective(topo, paths, demand, split, lam, h)
        lp = solve_policy_lp(topo, paths, demand, latency_weight=lam, headroom_fraction=h)
        assert v.objective >= lp.value.objective * (1 - 1e-6)  # the LP is a true lower bound


def test_model_is_conditioned_on_the_policy(data_dir):
    """The policy vector is learned, not decorative: on SNDlib GEANT (held out) the latency knob lowers the
    model's latency stretch, the headroom knob lowers its effective utilisation (both against the model's
    own min-MLU split), and each stays within 5 % of its policy's LP optimum."""
    features = pytest.importorskip("tellm.contract.onnx_io")
    from tecore import generate, load_topology, solve_min_mlu

    topo = load_topology("geant")
    paths = compute_paths(topo)
    sess = load_model(MODEL, provider="cpu")
    tm = generate(topo, "gravity", 1, seed=7)[0]
    demand = tm.pair_demands(paths.pairs)
    demand = demand * 0.6 / solve_min_mlu(topo, paths, demand).mlu  # latency_aware is scale-dependent
    run = lambda vec: sess.route(features.onnx_inputs(topo, paths, demand, policy=vec)).split.astype(float)  # noqa: E731
    base = run(make_policy("min_mlu").to_vector())
    for name, params, lam, h in (("latency_aware", {"weight": 0.5}, 0.5, 0.0), ("headroom", {"fraction": 0.3}, 0.0, 0.3)):
        split = run(make_policy(name, params).to_vector())
        v, v0 = evaluate_objective(topo, paths, demand, split, lam, h), evaluate_objective(topo, paths, demand, base, lam, h)
        lp = solve_policy_lp(topo, paths, demand, latency_weight=lam, headroom_fraction=h).value
        assert v.objective < v0.objective, name  # switching the policy improves that policy's objective
        assert lp.objective * (1 - 1e-6) <= v.objective <= 1.05 * lp.objective, name
        if lam:
            assert v.latency_stretch < v0.latency_stretch
        else:
            assert v.effective_utilisation < v0.effective_utilisation
