"""Policies as data (bounds, vectors) and tecore's per-policy LP against hand-solved cases."""

from __future__ import annotations

import numpy as np
import pytest

from tecore import PathSet, Topology, compute_paths, generate, load_topology, scale_to_mlu, solve_min_mlu
from tecore.objectives import evaluate_objective, solve_policy_lp, solve_policy_vector
from tellm.contract.policies import POLICIES, Policy, PolicyError, make_policy, policy_from_vector

from ..policy_helpers import triangle


def test_policy_vectors_follow_the_contract():
    assert make_policy("min_mlu").to_vector().tolist() == [0, 0, 0, 0]
    v = make_policy("latency_aware", {"weight": 0.25}).to_vector()
    assert v.dtype == np.float32 and v.tolist() == [0.25, 0, 0, 0]
    assert make_policy("headroom", {"fraction": 0.5}).to_vector().tolist() == [0, 0.5, 0, 0]
    assert make_policy("headroom").params == {"fraction": 0.2}  # default filled in
    for p in [make_policy("latency_aware", {"weight": 0.7}), make_policy("headroom", {"fraction": 0.1})]:
        assert policy_from_vector(p.to_vector()) == Policy(p.name, {k: float(np.float32(v)) for k, v in p.params.items()})
    assert set(POLICIES) >= {"min_mlu", "headroom", "latency_aware"}


@pytest.mark.parametrize("name,params,match", [
    ("headroom", {"fraction": 0.51}, r"'fraction' = 0.51 is outside \[0, 0.5\]"),
    ("headroom", {"fraction": -0.1}, "outside"),
    ("latency_aware", {"weight": float("nan")}, "outside"),
    ("latency_aware", {"weight": "0.3"}, "must be a number"),
    ("latency_aware", {"weight": True}, "must be a number"),
    ("min_mlu", {"fraction": 0.1}, "has no parameter 'fraction'"),
    ("max_throughput", {}, "unknown policy 'max_throughput'"),
    ("headroom", [0.2], "must be an object"),
])
def test_bad_policies_are_refused_with_the_reason(name, params, match):
    with pytest.raises(PolicyError, match=match):
        make_policy(name, params)


def test_triangle_min_mlu_and_headroom_by_hand():
    topo, paths = triangle(capacity_bps=10.0)
    d = np.array([12.0])
    # Two disjoint paths of equal capacity: split 1/2, MLU 12*0.5/10 = 0.6.
    r = solve_policy_lp(topo, paths, d)
    assert r.split == pytest.approx([0.5, 0.5], abs=1e-6) and r.value.mlu == pytest.approx(0.6)
    # Burst headroom 20 %: the only pair may surge by 20 % on each link: (6 + 1.2) / 10, fits.
    r = solve_policy_lp(topo, paths, d, headroom_fraction=0.2)
    assert r.split == pytest.approx([0.5, 0.5], abs=1e-6)
    assert r.value.effective_utilisation == pytest.approx(0.72) and r.value.fits
    # 16 bit/s with 50 %: (8 + 4) / 10 does not fit.
    r = solve_policy_lp(topo, paths, np.array([16.0]), headroom_fraction=0.5)
    assert r.value.effective_utilisation == pytest.approx(1.2) and not r.value.fits


def bowtie() -> tuple[Topology, PathSet]:
    """S->T direct (10 bit/s) or via M (S->M 10 bit/s, M->T 100); X feeds S (100).
    Pairs: S->T (two paths), X->T over S->T only, X->M over S->M only."""
    names = ("S", "T", "M", "X")
    edges = [(0, 1, 10.0), (0, 2, 10.0), (2, 1, 100.0), (3, 0, 100.0)]
    topo = Topology(name="bowtie", nodes=names, src=np.array([e[0] for e in edges]),
                    dst=np.array([e[1] for e in edges]), capacity_bps=np.array([e[2] for e in edges]),
                    weight=np.ones(4), latency_seconds=np.full(4, 1e-3))
    paths = PathSet.from_node_paths(topo, {(0, 1): [[0, 1], [0, 2, 1]], (3, 1): [[3, 0, 1]], (3, 2): [[3, 0, 2]]})
    return topo, paths


def test_burst_headroom_changes_the_split_by_hand():
    topo, paths = bowtie()
    d = np.zeros(paths.num_pairs)
    d[paths.pair_lookup[0, 1]], d[paths.pair_lookup[3, 1]], d[paths.pair_lookup[3, 2]] = 10.0, 6.0, 2.0
    first = paths.pair_ptr[paths.pair_lookup[0, 1]]
    # Min-MLU: 10x + 6 = 10(1-x) + 2 -> x = 0.3 on the direct link, MLU 0.9.
    r0 = solve_policy_lp(topo, paths, d)
    assert r0.split[first] == pytest.approx(0.3, abs=1e-6) and r0.value.mlu == pytest.approx(0.9)
    # h = 0.5: on S->T the largest pair is X->T (6 > 10x), on S->M it is S->T (10(1-x) > 2):
    # 10x + 6 + 3 = 10(1-x) + 2 + 5(1-x) -> x = 0.32, effective utilisation 1.22, MLU 0.92.
    r = solve_policy_lp(topo, paths, d, headroom_fraction=0.5)
    assert r.split[first] == pytest.approx(0.32, abs=1e-6)
    assert r.value.effective_utilisation == pytest.approx(1.22) and r.value.mlu == pytest.approx(0.92)
    # The min-MLU split is worse under this policy (1.25), and a grid of splits never beats the LP.
    v0 = evaluate_objective(topo, paths, d, r0.split, headroom_fraction=0.5)
    assert v0.effective_utilisation == pytest.approx(1.25)
    for x in np.linspace(0, 1, 101):
        s = r.split.copy()
        s[first], s[first + 1] = x, 1 - x
        assert evaluate_objective(topo, paths, d, s, headroom_fraction=0.5).objective >= r.value.objective - 1e-9


def test_triangle_latency_aware_by_hand():
    topo, paths = triangle(capacity_bps=10.0, latency_seconds=1e-3)
    d = np.array([2.0])
    # x on the 1 ms path, 1-x on the 2 ms path; for x >= 1/2: U = 0.2x, stretch = 2 - x,
    # objective = (0.2 - lambda) x + 2 lambda.
    r = solve_policy_lp(topo, paths, d, latency_weight=0.5)  # slope < 0: all on the short path
    assert r.split == pytest.approx([1.0, 0.0], abs=1e-6)
    assert r.value.mlu == pytest.approx(0.2) and r.value.latency_stretch == pytest.approx(1.0)
    assert r.value.objective == pytest.approx(0.7)
    r = solve_policy_lp(topo, paths, d, latency_weight=0.1)  # slope > 0: balance
    assert r.split == pytest.approx([0.5, 0.5], abs=1e-6)
    assert r.value.latency_stretch == pytest.approx(1.5) and r.value.objective == pytest.approx(0.25)
    # The evaluator gives any split's objective: the LP optimum is no worse than the alternatives.
    for x in np.linspace(0, 1, 11):
        v = evaluate_objective(topo, paths, d, np.array([x, 1 - x]), latency_weight=0.1)
        assert v.objective >= r.value.objective - 1e-9
    # Policy vector form: policy[0] = lambda, policy[1] = h.
    rv = solve_policy_vector(topo, paths, d, make_policy("latency_aware", {"weight": 0.5}).to_vector())
    assert rv.split == pytest.approx([1.0, 0.0], abs=1e-6)


def test_objective_knobs_are_bounded():
    topo, paths = triangle()
    with pytest.raises(ValueError, match="headroom_fraction"):
        solve_policy_lp(topo, paths, np.array([1.0]), headroom_fraction=0.6)
    with pytest.raises(ValueError, match="latency_weight"):
        evaluate_objective(topo, paths, np.array([1.0]), np.array([1.0, 0.0]), latency_weight=2.0)


def test_zero_knobs_match_the_min_mlu_lp(data_dir):
    topo = load_topology("Abilene")
    paths = compute_paths(topo, k=4)
    for tm in generate(topo, "gravity", 2, seed=3):
        d = scale_to_mlu(topo, tm, 0.8).pair_demands(paths.pairs)
        ref = solve_min_mlu(topo, paths, d)
        assert solve_policy_lp(topo, paths, d).value.mlu == pytest.approx(ref.mlu, rel=1e-6)
        # A latency penalty can only raise MLU and lower (or keep) the stretch.
        lat = solve_policy_lp(topo, paths, d, latency_weight=1.0)
        base = evaluate_objective(topo, paths, d, ref.split, latency_weight=1.0)
        assert lat.value.mlu >= ref.mlu - 1e-9
        assert lat.value.latency_stretch <= base.latency_stretch + 1e-9
        assert lat.value.objective <= base.objective + 1e-9
