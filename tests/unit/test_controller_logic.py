"""Pure controller logic: counters, TM estimation, quantisation, group planning, make-before-break
ordering and failure renormalisation (no switches). Routers and the core: test_controller_core.py."""

from __future__ import annotations

import numpy as np
import pytest
from tellm.controller.counters import COUNTER64, RateEstimator, counter_delta
from tellm.controller.failure import mask_split, path_alive, restrict_paths
from tellm.controller.groups import LABEL_BASE, POP, Bucket, desired_state
from tellm.controller.planner import Installed, OpKind, group_id, plan_update
from tellm.controller.quantise import apply_deadband, deadband_keep, drop_small_paths, quantise_weights, weights_to_split
from tellm.controller.tm import TMEstimator, relative_change

from tecore import Topology, check_split

from .controller_fixtures import diamond, diamond_paths


@pytest.fixture
def net():
    topo = diamond()
    return topo, diamond_paths(topo)


# ------------------------------------------------------------------ counters
def test_counter_delta_plain_wrap_and_reset():
    prev = np.array([100, 2 ** 64 - 10, 5000, 2 ** 32 - 4], dtype=np.uint64)
    curr = np.array([250, 20, 30, 6], dtype=np.uint64)
    d = counter_delta(prev, curr)
    assert d.tolist()[:3] == [150, 30, 30]  # grew; wrapped at 2**64; reset (5000 is not near the top)
    assert d[3] == 6  # a 32-bit-looking wrap is a reset for a 64-bit counter
    d32 = counter_delta(prev[3:], curr[3:], modulus=2 ** 32)
    assert d32.tolist() == [10]


def test_counter_wrap_implausible_is_reset():
    prev = np.array([COUNTER64 - 1000], dtype=np.uint64)
    curr = np.array([10 ** 6], dtype=np.uint64)
    assert counter_delta(prev, curr).tolist() == [10 ** 6 + 1000]
    assert counter_delta(prev, curr, max_delta=5000.0).tolist() == [10 ** 6]


def test_rate_estimator_independent_times_and_forget():
    r = RateEstimator(3)
    assert r.update([0, 1], [1000, 0], 10.0).tolist() == [0, 0]  # first samples: baselines only
    np.testing.assert_allclose(r.update([0], [3000], 12.0), [1000.0])
    np.testing.assert_allclose(r.update([1, 2], [500, 7], 11.0), [500.0, 0.0])
    assert r.rate.tolist() == [1000.0, 500.0, 0.0]
    r.forget([0])
    assert r.update([0], [10], 13.0).tolist() == [0.0]  # new baseline after forget
    np.testing.assert_allclose(r.update([0], [20], 14.0), [10.0])


# ------------------------------------------------------------------ TM
def test_tm_estimation_ewma_history_and_reset():
    tm = TMEstimator(3, alpha=0.5, history=2)
    tm.update([0, 0], [1, 2], [0, 0], 0.0)
    tm.update([0, 0], [1, 2], [1000, 500], 1.0)  # 8000 and 4000 bit/s
    assert tm.matrix()[0, 1] == 8000.0 and tm.matrix()[0, 2] == 4000.0
    tm.update([0], [1], [1000 + 2000], 2.0)  # 16000 bit/s -> EWMA 0.5*16000 + 0.5*8000
    assert tm.matrix()[0, 1] == 12000.0
    tm.update([0], [1], [100], 3.0)  # counter reset (rule reinstalled): 100 bytes, not 2**64
    assert tm.matrix()[0, 1] == pytest.approx(0.5 * 800 + 0.5 * 12000)
    for t in (3.0, 4.0, 5.0):
        tm.snapshot(t)
    assert [s.time_seconds for s in tm.history] == [4.0, 5.0]
    with pytest.raises(ValueError):
        tm.update([5], [0], [0], 1.0)
    assert relative_change(None, np.ones(2)) == float("inf")
    assert relative_change(np.array([1.0, 1.0]), np.array([1.0, 3.0])) == pytest.approx(0.5)


# ------------------------------------------------------------------ quantisation
def test_quantise_sums_exactly_and_bounded_error():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 9, size=500)
    pair_ptr = np.concatenate([[0], np.cumsum(counts)])
    raw = rng.random(pair_ptr[-1]) ** 3
    split = raw / np.repeat(np.add.reduceat(raw, pair_ptr[:-1]), counts)
    for total in (16, 256, 1000):
        w = quantise_weights(split, pair_ptr, total)
        assert w.dtype == np.int64 and w.min() >= 0
        assert np.all(np.add.reduceat(w, pair_ptr[:-1]) == total)
        assert np.max(np.abs(w / total - split)) < 1.0 / total  # the stated bound
    np.testing.assert_allclose(weights_to_split(quantise_weights(split, pair_ptr), pair_ptr), split, atol=1 / 256)


def test_quantise_known_values_and_all_zero_pair():
    pair_ptr = np.array([0, 3, 5])
    w = quantise_weights(np.array([0.75, 0.25, 0.0, 0.0, 0.0]), pair_ptr, 256)
    assert w.tolist() == [192, 64, 0, 256, 0]  # an all-zero pair gets its first path, never an empty group
    w = quantise_weights(np.array([1 / 3, 1 / 3, 1 / 3, 0.5, 0.5]), pair_ptr, 256)
    assert w.tolist() == [86, 85, 85, 128, 128]
    with pytest.raises(ValueError):
        quantise_weights(np.array([0.5, -0.1, 0.6]), np.array([0, 3]))


# ------------------------------------------------------------------ groups
def test_desired_state_labels_and_groups(net):
    topo, paths = net
    dpid = np.array([1, 2, 3, 4])
    li = topo.link_index
    port = np.zeros(topo.num_links, dtype=np.int64)
    for (u, v), lid in li.items():
        port[lid] = 10 + v  # port towards node v is 10 + v on every switch
    p = paths.pair_lookup[0, 3]
    a = paths.pair_ptr[p]
    w = np.zeros(paths.num_paths, dtype=np.int64)
    w[a], w[a + 1] = 192, 64
    st = desired_state(topo, paths, w, dpid, port)
    assert set(st.groups) == {(1, 4)}
    buckets = st.groups[(1, 4)]
    assert [b_.weight for b_ in buckets] == [192, 64]
    assert {b_.port for b_ in buckets} == {11, 12}  # first hops to s2 and s3
    # Transit on s2/s3 forwards each label to s4; s4 pops both.
    for b_ in buckets:
        j = b_.label - LABEL_BASE
        mid = paths.path_nodes(topo, j)[1]
        assert st.labels[(mid + 1, b_.label)] == 13
        assert st.labels[(4, b_.label)] == POP
    assert len(st.labels) == 4
    port[li[(0, 1)]] = -1
    with pytest.raises(ValueError, match="port is unknown"):
        desired_state(topo, paths, w, dpid, port)


# ------------------------------------------------------------------ make-before-break
def _state(groups, labels):
    from tellm.controller.groups import DesiredState
    return DesiredState.from_dicts(labels, groups)


def test_plan_first_install_order():
    b = (Bucket(20, 2, 128), Bucket(21, 3, 128))
    plan = plan_update(Installed(), _state({(1, 4): b}, {(2, 20): 5, (3, 21): 6, (4, 20): POP, (4, 21): POP}))
    kinds = [[op.kind for op in ph] for ph in plan.phases]
    assert kinds == [[OpKind.ADD_LABEL] * 4, [OpKind.ADD_GROUP], [OpKind.ADD_CLASS]]
    assert plan.phases[1][0].group_id == group_id(4, 0) == plan.phases[2][0].group_id
    assert plan.after.groups[(1, 4)] == (group_id(4, 0), b)
    # Nothing changed: nothing to do.
    again = plan_update(plan.after, _state({(1, 4): b}, {(2, 20): 5, (3, 21): 6, (4, 20): POP, (4, 21): POP}))
    assert again.phases == ()


def test_plan_reroute_is_make_before_break():
    old_b = (Bucket(20, 2, 256),)
    inst = plan_update(Installed(), _state({(1, 4): old_b}, {(2, 20): 5, (4, 20): POP})).after
    new_b = (Bucket(21, 3, 256),)
    plan = plan_update(inst, _state({(1, 4): new_b, (1, 3): (Bucket(22, 3, 256),)},
                                    {(3, 21): 6, (4, 21): POP, (3, 22): POP}))
    ops = plan.ops
    pos = {}
    for i, op in enumerate(ops):
        pos.setdefault(op.kind, []).append(i)
    # new labels < new groups < classification move < old group delete < old label delete
    assert max(pos[OpKind.ADD_LABEL]) < min(pos[OpKind.ADD_GROUP])
    assert max(pos[OpKind.ADD_GROUP]) < min(pos[OpKind.MODIFY_CLASS] + pos[OpKind.ADD_CLASS])
    assert max(pos[OpKind.MODIFY_CLASS] + pos[OpKind.ADD_CLASS]) < min(pos[OpKind.DELETE_GROUP])
    assert max(pos[OpKind.DELETE_GROUP]) < min(pos[OpKind.DELETE_LABEL])
    mod = [op for op in ops if op.kind is OpKind.MODIFY_CLASS][0]
    assert mod.group_id == group_id(4, 1)  # alternate id: the old group lives until traffic moved
    assert [op.group_id for op in ops if op.kind is OpKind.DELETE_GROUP] == [group_id(4, 0)]
    assert {(op.dpid, op.label) for op in ops if op.kind is OpKind.DELETE_LABEL} == {(2, 20), (4, 20)}
    # A third update flips back to version 0.
    plan2 = plan_update(plan.after, _state({(1, 4): old_b}, {(2, 20): 5, (4, 20): POP}))
    assert [op.group_id for op in plan2.ops if op.kind is OpKind.ADD_GROUP] == [group_id(4, 0)]
    assert [op.kind for op in plan2.ops].count(OpKind.DELETE_CLASS) == 1  # pair (1,3) no longer routed


def test_forget_switch_reinstalls_only_it():
    b = (Bucket(20, 2, 256),)
    inst = plan_update(Installed(), _state({(1, 4): b}, {(2, 20): 5, (4, 20): POP})).after
    inst.forget_switch(2)
    plan = plan_update(inst, _state({(1, 4): b}, {(2, 20): 5, (4, 20): POP}))
    assert [(op.kind, op.dpid) for op in plan.ops] == [(OpKind.ADD_LABEL, 2)]


# ------------------------------------------------------------------ failures
def test_failure_renormalises_and_never_blackholes(net):
    topo, paths = net
    split = np.zeros(paths.num_paths)
    split[paths.pair_ptr[:-1]] = 0.7
    split[paths.pair_ptr[:-1] + 1] = 0.3
    up = np.ones(topo.num_links)
    up[topo.link_index[(0, 1)]] = 0  # s1->s2 down
    m = mask_split(paths, split, up)
    check_split(paths, m.split)
    alive = path_alive(paths, up)
    assert np.all(m.split[~alive] == 0)
    p = paths.pair_lookup[0, 3]
    a = paths.pair_ptr[p]
    assert m.split[a:a + 2].tolist() in ([0.0, 1.0], [1.0, 0.0])
    # A pair whose only weighted path died gets an equal split over its live paths.
    split2 = np.zeros(paths.num_paths)
    split2[paths.pair_ptr[:-1]] = 1.0
    m2 = mask_split(paths, split2, up)
    check_split(paths, m2.split)
    assert np.all(m2.split[~alive] == 0) and m2.rescued_pairs.size > 0 and m2.stranded_pairs.size == 0
    # s1 cut off completely: its pairs are stranded and keep their split (nothing invented).
    up3 = np.ones(topo.num_links)
    up3[[topo.link_index[(0, 1)], topo.link_index[(0, 2)]]] = 0
    m3 = mask_split(paths, split, up3)
    assert set(paths.pairs[m3.stranded_pairs, 0].tolist()) == {0}
    r = restrict_paths(paths, up)
    assert r.paths.num_paths == int(alive.sum())
    np.testing.assert_array_equal(r.expand(np.ones(r.paths.num_paths), paths.num_paths), alive.astype(float))


def _random_state(rng, n_switches=5):
    labels, groups = {}, {}
    for s in range(1, n_switches + 1):
        for d in range(1, n_switches + 1):
            if s == d or rng.random() < 0.3:
                continue
            bs = []
            for lab in rng.choice(np.arange(16, 60), size=rng.integers(1, 4), replace=False).tolist():
                bs.append(Bucket(lab, int(rng.integers(1, 5)), int(rng.integers(1, 256))))
                labels[(d, lab)] = POP
                labels[(int(rng.integers(1, n_switches + 1)), lab)] = int(rng.integers(1, 5))
            groups[(s, d)] = tuple(sorted(bs, key=lambda b: b.label))
    return labels, groups


def test_plans_reach_the_target_and_never_reference_missing_state():
    """Simulate switches op by op: after every phase, each classification rule points at an existing
    group whose labels exist (make-before-break); after the plan the switches hold the target."""
    rng = np.random.default_rng(1)
    switch_labels, switch_groups, switch_class = set(), {}, {}
    installed = Installed()
    for _ in range(30):
        labels, groups = _random_state(rng)
        plan = plan_update(installed, _state(groups, labels))
        for phase in plan.phases:
            for op in phase:
                k = op.kind
                if k in (OpKind.ADD_LABEL, OpKind.MODIFY_LABEL):
                    switch_labels.add((op.dpid, op.label))
                elif k is OpKind.DELETE_LABEL:
                    switch_labels.discard((op.dpid, op.label))
                elif k is OpKind.ADD_GROUP:
                    assert (op.dpid, op.group_id) not in switch_groups  # never overwrites a live group
                    switch_groups[(op.dpid, op.group_id)] = op.buckets
                elif k is OpKind.DELETE_GROUP:
                    assert switch_class.get((op.dpid, op.dest_dpid)) != op.group_id  # not in use
                    del switch_groups[(op.dpid, op.group_id)]
                elif k in (OpKind.ADD_CLASS, OpKind.MODIFY_CLASS):
                    switch_class[(op.dpid, op.dest_dpid)] = op.group_id
                elif k is OpKind.DELETE_CLASS:
                    del switch_class[(op.dpid, op.dest_dpid)]
            installed_labels = {lab for _, lab in switch_labels}
            for (s, d), gid in switch_class.items():
                assert (s, gid) in switch_groups
                assert all(b.label in installed_labels for b in switch_groups[(s, gid)])
        installed = plan.after
        assert switch_labels == set(labels)
        assert {k: switch_groups[(k[0], gid)] for k, gid in switch_class.items()} == groups
        assert len(switch_groups) == len(groups)


def test_desired_state_matches_a_per_path_reference():
    import networkx as nx

    from tecore import compute_paths

    g = nx.connected_watts_strogatz_graph(14, 4, 0.3, seed=3)
    topo = Topology.from_networkx(g, name="ws14")
    paths = compute_paths(topo, k=3, workers=1)
    rng = np.random.default_rng(2)
    w = quantise_weights(rng.random(paths.num_paths) ** 4 * (rng.random(paths.num_paths) < 0.6), paths.pair_ptr)
    dpid = np.arange(topo.num_nodes) * 7 + 3  # dpids unrelated to node order
    port = rng.permutation(topo.num_links) + 1
    st = desired_state(topo, paths, w, dpid, port)
    labels, groups = {}, {}
    for j in range(paths.num_paths):
        if w[j] == 0:
            continue
        links = paths.path_links[paths.path_ptr[j]:paths.path_ptr[j + 1]]
        for lk in links[1:]:
            labels[(int(dpid[topo.src[lk]]), j + LABEL_BASE)] = int(port[lk])
        labels[(int(dpid[topo.dst[links[-1]]]), j + LABEL_BASE)] = POP
        s, d = paths.pairs[paths.path_pair[j]]
        groups.setdefault((int(dpid[s]), int(dpid[d])), []).append(Bucket(j + LABEL_BASE, int(port[links[0]]), int(w[j])))
    assert st.labels == labels
    assert st.groups == {k: tuple(v) for k, v in groups.items()}


def test_weight_deadband_keeps_small_moves_only():
    ptr = np.array([0, 2, 4, 6, 8])
    old = np.array([128, 128, 200, 56, 256, 0, 200, 56])
    # L1 distances: pair 0 0.016, pair 1 0.078, pair 2 (starts a path) 0.047, pair 3 0.23
    new = np.array([130, 126, 190, 66, 250, 6, 170, 86])
    assert deadband_keep(new, old, ptr, 0.1).tolist() == [True, True, True, False]
    assert deadband_keep(new, old, ptr, 0.04).tolist() == [True, False, False, False]
    out = apply_deadband(new, old, ptr, 0.04)
    assert out.tolist() == [128, 128, 190, 66, 250, 6, 170, 86]
    assert apply_deadband(new, old, ptr, 0).tolist() == new.tolist()
    assert apply_deadband(new, None, ptr, 0.1).tolist() == new.tolist()
    # Failures act at once whatever the distance; a pair with no valid installed group is never kept.
    act = np.array([True, False, False, False])
    assert deadband_keep(new, old, ptr, 0.1, act).tolist() == [False, True, True, False]
    gone = old.copy()
    gone[2:4] = 0
    assert deadband_keep(new, gone, ptr, 2.0).tolist() == [True, False, True, True]


def test_small_paths_dropped_and_renormalised():
    ptr = np.array([0, 3, 6, 8])
    split = np.array([0.7, 0.28, 0.02, 0.4, 0.4, 0.2, 0.01, 0.01])
    out = drop_small_paths(split, ptr, 0.05)
    assert out.tolist() == [0.7, 0.28, 0.0, 0.4, 0.4, 0.2, 0.01, 0.01]  # a pair's largest paths always stay
    w = quantise_weights(out, ptr)
    assert w[2] == 0 and np.add.reduceat(w, ptr[:-1]).tolist() == [256, 256, 256]
    assert drop_small_paths(split, ptr, 0).tolist() == split.tolist()
    # Unnormalised input: shares are relative to the pair's sum.
    assert drop_small_paths(np.array([2.0, 0.08]), np.array([0, 2]), 0.05).tolist() == [2.0, 0.0]
