"""Plans at scale without switches: bulk OpenFlow encoding (byte-identical to os-ken's serialisation),
the cached forwarding layout, barrier rounds, per-switch flow control and rate limit, rules per switch."""

from __future__ import annotations

import logging
import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("OSKEN_HUB_TYPE", "native")

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from tellm.controller import ofbulk, ofmsgs
from tellm.controller.groups import POP, Bucket, ForwardingCache, desired_state
from tellm.controller.ofsend import PlanSender, SendLimits
from tellm.controller.planner import Installed, OpBatch, OpKind, Phase, plan_update
from tellm.controller.quantise import quantise_weights
from tellm.controller.rules import BASE_FLOWS, candidate_bound, switch_rules

from .controller_fixtures import diamond, diamond_paths
from .test_controller_logic import _random_state, _state


@pytest.fixture
def net():
    topo = diamond()
    return topo, diamond_paths(topo)


def _osken_bytes(op, xid):
    msg = ofmsgs.op_message(SimpleNamespace(ofproto=ofp, ofproto_parser=parser), op)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def _batches(rng, n=40):
    d = np.sort(rng.integers(1, 65000, n))
    port = rng.integers(1, 2 ** 31, n)
    port[rng.random(n) < 0.4] = POP
    nb = rng.integers(1, 6, n)
    yield OpBatch(OpKind.ADD_LABEL, d, label=rng.integers(16, 2 ** 20, n), port=port)
    yield OpBatch(OpKind.MODIFY_LABEL, d, label=rng.integers(16, 2 ** 20, n), port=port[::-1].copy())
    yield OpBatch(OpKind.DELETE_LABEL, d, label=rng.integers(16, 2 ** 20, n))
    for kind in (OpKind.ADD_CLASS, OpKind.MODIFY_CLASS, OpKind.DELETE_CLASS, OpKind.DELETE_GROUP):
        yield OpBatch(kind, d, group_id=rng.integers(0, 2 ** 32 - 2, n), dest_dpid=rng.integers(1, 65280, n))
    yield OpBatch(OpKind.ADD_GROUP, d, group_id=rng.integers(0, 2 ** 32 - 2, n), dest_dpid=rng.integers(1, 65280, n),
                  bucket_ptr=np.concatenate([[0], np.cumsum(nb)]), bucket_label=rng.integers(16, 2 ** 20, nb.sum()),
                  bucket_port=rng.integers(1, 2 ** 31, nb.sum()), bucket_weight=rng.integers(1, 257, nb.sum()))


def test_bulk_encoding_is_byte_identical_to_osken():
    rng = np.random.default_rng(4)
    kinds = set()
    for batch in _batches(rng):
        ops = batch.ops()
        seen = []
        for enc in ofbulk.encode(batch, xid_base=1000):
            assert enc.offsets[-1] == enc.nbytes and np.all(np.diff(enc.dpid) >= 0)
            for i in range(len(enc)):
                raw = enc.data[enc.offsets[i]:enc.offsets[i + 1]].tobytes()
                row = int.from_bytes(raw[4:8], "big") - 1000  # message i carries its row's xid
                assert raw == _osken_bytes(ops[row], 1000 + row), ops[row]
                assert enc.dpid[i] == ops[row].dpid
                seen.append(row)
            ranges = enc.switch_ranges()
            assert [d for d, _, _ in ranges] == sorted(set(enc.dpid.tolist()))
            assert sum(e - a for _, a, e in ranges) == len(enc)
        assert sorted(seen) == list(range(len(batch)))  # every operation exactly once
        kinds.add(batch.kind)
    assert kinds == set(OpKind)


def test_forwarding_cache_reuses_the_layout_while_the_same_paths_carry_traffic(net):
    topo, paths = net
    rng = np.random.default_rng(0)
    dpid = np.arange(1, topo.num_nodes + 1)
    port = np.arange(topo.num_links) + 10
    labels = 16 + np.arange(paths.num_paths)
    cache = ForwardingCache()
    raw = rng.random(paths.num_paths)
    w1 = quantise_weights(raw, paths.pair_ptr)
    s1 = cache.desired(topo, paths, w1, dpid, port, labels, dpid)
    ref = desired_state(topo, paths, w1, dpid, port, labels)
    assert s1.labels == ref.labels and s1.groups == ref.groups
    w2 = w1.copy()
    # Same active paths, other weights: the layout (label and bucket arrays) is shared.
    p = int(np.flatnonzero(np.diff(paths.pair_ptr) >= 2)[0])
    a = int(paths.pair_ptr[p])
    if w2[a] > 1 and w2[a + 1] > 0:
        w2[a] -= 1
        w2[a + 1] += 1
    s2 = cache.desired(topo, paths, w2, dpid, port, labels, dpid)
    assert s2.label_keys is s1.label_keys and s2.bucket_label is s1.bucket_label
    assert s2.groups == desired_state(topo, paths, w2, dpid, port, labels).groups
    plan = plan_update(Installed(s1, np.zeros(s1.group_keys.size, dtype=np.int64)), s2)
    assert all(op.kind not in (OpKind.ADD_LABEL, OpKind.DELETE_LABEL) for op in plan.ops)
    # A path stops carrying traffic: rebuilt; only some switches connected: restricted.
    w3 = w2.copy()
    w3[a], w3[a + 1] = w3[a] + w3[a + 1], 0
    s3 = cache.desired(topo, paths, w3, dpid, port, labels, dpid[:2])
    ref3 = desired_state(topo, paths, w3, dpid, port, labels).on_switches(dpid[:2])
    assert s3.labels == ref3.labels and s3.groups == ref3.groups


def test_plan_rounds_merge_independent_phases():
    rng = np.random.default_rng(1)
    installed = Installed()
    seen_all = False
    for _ in range(20):
        labels, groups = _random_state(rng)
        plan = plan_update(installed, _state(groups, labels))
        phases = [ph for ph, _ in plan.steps]
        assert phases == sorted(phases)
        rounds = plan.rounds()
        assert [r for r, _ in rounds] == sorted({r for r, _ in rounds})
        kinds = [{b.kind for b in batches} for _, batches in rounds]
        for r, ks in zip([r for r, _ in rounds], kinds):
            allowed = [{OpKind.ADD_LABEL, OpKind.MODIFY_LABEL, OpKind.ADD_GROUP},
                       {OpKind.ADD_CLASS, OpKind.MODIFY_CLASS}, {OpKind.DELETE_CLASS, OpKind.DELETE_GROUP},
                       {OpKind.DELETE_LABEL}][r]
            assert ks <= allowed
        seen_all |= len(rounds) == 4 and len(plan.steps) == 6
        assert sum(len(b) for _, bs in rounds for b in bs) == plan.num_ops == len(plan.ops)
        for _, batches in plan.steps:
            for b in batches:
                assert np.all(np.diff(b.dpid) >= 0)  # rows in switch order (bulk sending slices per switch)
        installed = plan.after
    assert seen_all
    assert Phase.DELETE_LABELS == 5


class SlowSwitch:
    """Answers each barrier after ``delay`` seconds on a timer thread; tracks unconfirmed messages."""

    def __init__(self, dpid, delay, replies):
        self.id, self.delay, self.replies = dpid, delay, replies
        self.confirmed = self.max_unconfirmed = self.messages = 0
        self.lock = threading.Lock()
        self.times = []

    def send(self, buf):
        n = 0
        off = 0
        while off < len(buf):
            off += int.from_bytes(buf[off + 2:off + 4], "big")
            n += 1
        with self.lock:
            self.messages += n
            self.max_unconfirmed = max(self.max_unconfirmed, self.messages - self.confirmed)
            self.times.append((time.monotonic(), n))
        return n


def _sender(switches, window, rate, delay):
    def barrier(dp, reply):
        upto = dp.messages  # a barrier reply confirms everything sent before the request

        def answer():
            with dp.lock:
                dp.confirmed = max(dp.confirmed, upto)
            reply.set()

        threading.Timer(delay, answer).start()

    return PlanSender(barrier, SendLimits(window, rate))


def _big_plan(n_switches=3, labels_per_switch=400):
    keys = {(d, 16 + j): 3 for d in range(1, n_switches + 1) for j in range(labels_per_switch)}
    return plan_update(Installed(), _state({}, keys))


def test_sender_keeps_at_most_one_window_unconfirmed_per_switch():
    plan = _big_plan()
    switches = {d: SlowSwitch(d, 0.02, None) for d in (1, 2, 3)}
    sender = _sender(switches, window=100, rate=0, delay=0.02)
    report = sender.send(plan, switches)
    assert report.messages == plan.num_ops == 1200 and report.timed_out == 0
    assert report.barriers == 3 * 400 // 50
    for dp in switches.values():
        assert dp.messages == 400 and dp.max_unconfirmed <= 100


def test_sender_rate_limit_and_barrier_timeout(monkeypatch, caplog):
    plan = _big_plan(n_switches=1, labels_per_switch=300)
    switches = {1: SlowSwitch(1, 0.0, None)}
    sender = _sender(switches, window=100, rate=1000.0, delay=0.0)
    assert sender.estimate_seconds(plan) == pytest.approx(0.3)
    t0 = time.monotonic()
    sender.send(plan, switches)
    # 6 chunks of 50 at 1000 messages/s: the last starts >= 0.25 s after the first.
    assert time.monotonic() - t0 >= 0.24
    starts = [t for t, _ in switches[1].times]
    assert starts[-1] - starts[0] >= 0.24
    # A switch that never answers: each barrier times out (logged), the plan still finishes.
    import tellm.controller.ofsend as ofsend
    monkeypatch.setattr(ofsend, "BARRIER_TIMEOUT_SECONDS", 0.05)
    mute = {1: SlowSwitch(1, 0.0, None)}
    sender = PlanSender(lambda dp, reply: None, SendLimits(100, 0))
    with caplog.at_level(logging.WARNING, logger="tellm.controller"):
        report = sender.send(_big_plan(n_switches=1, labels_per_switch=120), mute)
    assert report.timed_out == report.barriers == 3
    assert "no barrier reply from dpid=1" in caplog.text


def test_rules_per_switch_match_the_installed_state(net):
    topo, paths = net
    dpid = np.arange(1, topo.num_nodes + 1) * 10
    port = np.arange(topo.num_links) + 10
    w = quantise_weights(np.random.default_rng(2).random(paths.num_paths), paths.pair_ptr)
    w[paths.pair_ptr[:-1]] = 0  # some paths carry nothing
    w = quantise_weights(w.astype(float), paths.pair_ptr)
    st = desired_state(topo, paths, w, dpid, port)
    hosts = np.array([10, 10, 30])
    r = switch_rules(st, dpid, hosts, candidate_bound(topo, paths))
    for i, d in enumerate(dpid.tolist()):
        labels = sum(1 for (dd, _) in st.labels if dd == d)
        groups = {k: b for k, b in st.groups.items() if k[0] == d}
        assert r.groups[i] == len(groups)
        assert r.buckets[i] == sum(len(b) for b in groups.values())
        assert r.flows[i] == BASE_FLOWS + int((hosts == d).sum()) + labels + len(groups)
    full = desired_state(topo, paths, np.ones(paths.num_paths, dtype=np.int64), dpid, port)
    fr = switch_rules(full, dpid, hosts, candidate_bound(topo, paths))
    assert np.array_equal(fr.rules, fr.bound) and np.all(r.rules <= r.bound)
    assert r.json(dpid)["bound_rules_per_switch"] == int(fr.rules.max())


def test_deferred_delete_rounds_go_after_the_drain_and_before_the_next_plan():
    """The control loop defers the rounds that delete old state: they are sent once the drain has
    passed (flush), and a later plan always sends them first."""
    import tellm.controller.ofsend as ofsend

    sent = []

    class Recorder:
        id = 1

        def send(self, buf):
            sent.append((time.monotonic(), None, buf))

    def kinds(buf):
        out, off = [], 0
        while off < len(buf):
            out.append(buf[off + 1])  # OpenFlow message type: 14 flow mod, 15 group mod
            if buf[off + 1] == 14:
                out[-1] = ("flow", buf[off + 25])  # command: 0 add, 1 modify, 3 delete, 4 delete strict
            else:
                out[-1] = ("group", int.from_bytes(buf[off + 8:off + 10], "big"))  # 0 add, 2 delete
            off += int.from_bytes(buf[off + 2:off + 4], "big")
        return out

    sender = PlanSender(lambda dp, reply: reply.set(), SendLimits(100, 0))
    dps = {1: Recorder()}
    old = _state({(1, 4): (Bucket(20, 2, 256),)}, {(1, 20): POP})
    first = plan_update(Installed(), old)
    sender.send(first, dps, defer_deletes=True)
    assert not sender.pending_deletes  # nothing to delete yet
    moved = plan_update(first.after, _state({(1, 4): (Bucket(21, 3, 256),)}, {(1, 21): POP}))
    t0 = time.monotonic()
    sent.clear()
    sender.send(moved, dps, defer_deletes=True)
    assert sender.pending_deletes and sender.deletes_due >= t0 + ofsend.OLD_STATE_DRAIN_SECONDS - 0.05
    before = [k for _, _, b in sent for k in kinds(b)]
    assert ("group", 2) not in before and ("flow", 4) not in before  # no delete sent yet
    # The next plan flushes the deletes first (after the drain), then sends its own messages.
    again = plan_update(moved.after, _state({(1, 4): (Bucket(20, 2, 256),)}, {(1, 20): POP}))
    sent.clear()
    sender.send(again, dps, defer_deletes=True)
    order = [k for _, _, b in sent for k in kinds(b)]
    assert sent[0][0] >= t0 + ofsend.OLD_STATE_DRAIN_SECONDS - 0.05  # the drain was waited out
    first_add = next(i for i, k in enumerate(order) if k in (("flow", 0), ("group", 0)))
    assert ("group", 2) in order[:first_add] and ("flow", 4) in order[:first_add]
