"""Make-before-break update plans: the ordered switch operations that move the network from what is
installed to a new DesiredState without dropping packets.

Phases (in order; the glue sends them in barrier rounds, see ``BARRIER_ROUND``):
1. install new/changed path labels on transit and egress switches;
2. install the new ingress select groups under a fresh group id (each (ingress, egress) pair has two
   ids that alternate, so the old group stays intact while traffic still uses it);
3. move the ingress classification rule to the new group (a modify: byte counters survive, so the
   traffic matrix is not disturbed);
4. delete classification rules of pairs that are no longer routed;
5. delete the old groups;
6. delete labels no path uses any more.
A packet classified before step 3 uses the old group and old labels, which live until steps 5-6; one
classified after uses the new group, whose labels exist since step 1.

Plans are data: each phase is a few ``OpBatch`` record batches (one operation kind each, columns as
numpy arrays, rows sorted by switch), built by a vectorised diff of sorted keys. ``Op`` objects exist
only as a view for tests and logs (``Plan.ops``); the glue encodes batches straight to OpenFlow bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from functools import cached_property

import numpy as np

from .groups import _DPID_BITS, _LABEL_BITS, Bucket, DesiredState


class OpKind(str, Enum):
    ADD_LABEL = "add_label"
    MODIFY_LABEL = "modify_label"
    ADD_GROUP = "add_group"
    ADD_CLASS = "add_class"
    MODIFY_CLASS = "modify_class"
    DELETE_CLASS = "delete_class"
    DELETE_GROUP = "delete_group"
    DELETE_LABEL = "delete_label"


class Phase(IntEnum):
    LABELS = 0
    GROUPS = 1
    CLASSIFY = 2
    DELETE_CLASS = 3
    DELETE_GROUPS = 4
    DELETE_LABELS = 5


#: Phases that may share one barrier round: nothing in a phase depends on the other phases of its
#: round. New labels and new groups are independent (a group is only used once a classification rule
#: points at it, in the next round); deleting an unrouted pair's rule and deleting an old group are
#: independent (a rule never points at an old group after the classification round, and deleting a
#: group also removes rules that still point at it). Rounds are separated by a barrier on every switch
#: touched; the delete rounds wait for in-flight packets to drain first.
BARRIER_ROUND = {Phase.LABELS: 0, Phase.GROUPS: 0, Phase.CLASSIFY: 1, Phase.DELETE_CLASS: 2,
                 Phase.DELETE_GROUPS: 2, Phase.DELETE_LABELS: 3}
#: The first round that removes old state (the glue lets packets in flight drain before it).
FIRST_DELETE_ROUND = 2


@dataclass(frozen=True)
class Op:
    """One switch operation (a view of one OpBatch row, for tests and logs)."""

    kind: OpKind
    dpid: int
    label: int = 0
    port: int = 0  # label ops: output port or groups.POP
    group_id: int = 0
    dest_dpid: int = 0  # group/classification ops: the egress switch
    buckets: tuple[Bucket, ...] = ()


_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class OpBatch:
    """Operations of one kind as columns: row i is one switch operation; rows are sorted by ``dpid``.

    Label ops use ``label``/``port``; group and classification ops ``group_id``/``dest_dpid``; the
    buckets of ADD_GROUP row i are rows ``bucket_ptr[i]:bucket_ptr[i+1]`` of the bucket columns."""

    kind: OpKind
    dpid: np.ndarray
    label: np.ndarray = field(default_factory=lambda: _EMPTY)
    port: np.ndarray = field(default_factory=lambda: _EMPTY)
    group_id: np.ndarray = field(default_factory=lambda: _EMPTY)
    dest_dpid: np.ndarray = field(default_factory=lambda: _EMPTY)
    bucket_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    bucket_label: np.ndarray = field(default_factory=lambda: _EMPTY)
    bucket_port: np.ndarray = field(default_factory=lambda: _EMPTY)
    bucket_weight: np.ndarray = field(default_factory=lambda: _EMPTY)

    def __len__(self) -> int:
        return int(self.dpid.size)

    def column(self, name: str) -> np.ndarray:
        """A per-row column, zeros when this kind does not use it."""
        col = getattr(self, name)
        return col if col.size == self.dpid.size else np.zeros(self.dpid.size, dtype=np.int64)

    def ops(self) -> list[Op]:
        cols = [self.column(c).tolist() for c in ("dpid", "label", "port", "group_id", "dest_dpid")]
        if self.kind is not OpKind.ADD_GROUP:
            return [Op(self.kind, *row) for row in zip(*cols)]
        ptr = self.bucket_ptr.tolist()
        rows = list(zip(self.bucket_label.tolist(), self.bucket_port.tolist(), self.bucket_weight.tolist()))
        return [Op(self.kind, d, lab, p, g, dd, tuple(Bucket(*r) for r in rows[ptr[i]:ptr[i + 1]]))
                for i, (d, lab, p, g, dd) in enumerate(zip(*cols))]


def group_id(dest_dpid, version):
    """Group ids of one pair alternate between two values (version 0/1)."""
    return 2 * dest_dpid + (version & 1)


@dataclass
class Installed:
    """What the controller believes the switches hold: a DesiredState plus each group's id."""

    state: DesiredState = field(default_factory=DesiredState)
    group_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def forget_switch(self, dpid: int) -> None:
        """The switch lost (or we wiped) its state: the next plan reinstalls everything on it."""
        st = self.state
        keep_l = (st.label_keys >> _LABEL_BITS) != dpid
        keep_g = (st.group_keys >> _DPID_BITS) != dpid
        sel = st.select_groups(keep_g)
        self.state = DesiredState(st.label_keys[keep_l], st.label_ports[keep_l], sel.group_keys, sel.group_ptr,
                                  sel.bucket_label, sel.bucket_port, sel.bucket_weight)
        self.group_ids = self.group_ids[keep_g]

    # Dict views (tests, logs).
    @property
    def labels(self) -> dict[tuple[int, int], int]:
        return self.state.labels

    @property
    def groups(self) -> dict[tuple[int, int], tuple[int, tuple[Bucket, ...]]]:
        return {k: (int(gid), b) for (k, b), gid in zip(self.state.groups.items(), self.group_ids.tolist())}


@dataclass(frozen=True, eq=False)
class Plan:
    """Non-empty phases in order, each as (phase, its non-empty batches), and the state after."""

    steps: tuple[tuple[Phase, tuple[OpBatch, ...]], ...]
    after: Installed

    @property
    def num_ops(self) -> int:
        return sum(len(b) for _, batches in self.steps for b in batches)

    @property
    def group_updates(self) -> int:
        return sum(len(b) for _, batches in self.steps for b in batches if b.kind is OpKind.ADD_GROUP)

    def rounds(self) -> list[tuple[int, list[OpBatch]]]:
        """The batches of each barrier round that has any, in order: [(round, batches)]."""
        out: dict[int, list[OpBatch]] = {}
        for phase, batches in self.steps:
            out.setdefault(BARRIER_ROUND[phase], []).extend(batches)
        return sorted(out.items(), key=lambda kv: kv[0])

    # Op views (tests, logs): built on first use only.
    @cached_property
    def phases(self) -> tuple[tuple[Op, ...], ...]:
        return tuple(tuple(op for b in batches for op in b.ops()) for _, batches in self.steps)

    @property
    def ops(self) -> list[Op]:
        return [op for phase in self.phases for op in phase]


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found [n] bool, position in sorted_keys [n]) for each of ``keys``."""
    pos = np.searchsorted(sorted_keys, keys)
    pos_c = np.minimum(pos, max(sorted_keys.size - 1, 0))
    found = (pos < sorted_keys.size) & (sorted_keys[pos_c] == keys) if sorted_keys.size else \
        np.zeros(keys.size, dtype=bool)
    return found, pos_c


def _gather(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """arr[pos], or zeros when arr is empty (nothing installed yet; callers mask with ``found``)."""
    return arr[pos] if arr.size else np.zeros(pos.size, dtype=arr.dtype)


def _ranges(ptr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Concatenated row indices ptr[i]:ptr[i+1] for each i in idx."""
    counts = ptr[idx + 1] - ptr[idx]
    starts = np.repeat(ptr[idx] - np.cumsum(counts) + counts, counts)
    return starts + np.arange(counts.sum())


def _label_diff(old: DesiredState, new: DesiredState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of labels to add and modify (into new) and delete (into old)."""
    if old.label_keys is new.label_keys and old.label_ports is new.label_ports:
        return _EMPTY, _EMPTY, _EMPTY  # the same forwarding structure (groups.ForwardingCache)
    found, pos = _lookup(old.label_keys, new.label_keys)
    add_l = np.flatnonzero(~found)
    mod_l = np.flatnonzero(found & (_gather(old.label_ports, pos) != new.label_ports))
    gone, _ = _lookup(new.label_keys, old.label_keys)
    return add_l, mod_l, np.flatnonzero(~gone)


def _group_rows_same(old: DesiredState, new: DesiredState, cand: np.ndarray, old_pos: np.ndarray) -> np.ndarray:
    """bool [cand]: new group cand[i] has exactly the bucket rows of old group old_pos[i]."""
    if new.group_keys is old.group_keys and new.group_ptr is old.group_ptr and cand.size == old.group_keys.size:
        # The same layout (groups.ForwardingCache): rows align, only the weights can differ.
        moved = np.add.reduceat((new.bucket_weight != old.bucket_weight).astype(np.int64), new.group_ptr[:-1]) \
            if new.bucket_weight.size else np.zeros(cand.size, dtype=np.int64)
        return moved == 0
    n_new = np.diff(new.group_ptr)
    r_new = _ranges(new.group_ptr, cand)
    r_old = _ranges(old.group_ptr, old_pos)
    diff_row = new.bucket_weight[r_new] != old.bucket_weight[r_old]
    if not (new.bucket_label is old.bucket_label and new.bucket_port is old.bucket_port):
        diff_row |= (new.bucket_label[r_new] != old.bucket_label[r_old]) | \
                    (new.bucket_port[r_new] != old.bucket_port[r_old])
    owner = np.repeat(np.arange(cand.size), n_new[cand])
    return np.bincount(owner, weights=diff_row, minlength=cand.size) == 0


def _split(keys: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    return keys >> bits, keys & ((1 << bits) - 1)


def plan_update(installed: Installed, desired: DesiredState) -> Plan:
    """Ordered operations from ``installed`` to ``desired`` (vectorised diff, no Python per operation)."""
    old, new = installed.state, desired
    add_l, mod_l, del_l = _label_diff(old, new)
    # ---- groups: a pair's group is unchanged when its bucket rows are identical
    gfound, gpos = _lookup(old.group_keys, new.group_keys)
    n_new = np.diff(new.group_ptr)
    same = gfound.copy()
    same[gfound] &= n_new[gfound] == _gather(np.diff(old.group_ptr), gpos[gfound])
    cand = np.flatnonzero(same)
    if cand.size:
        same[cand] = _group_rows_same(old, new, cand, gpos[cand])
    changed = gfound & ~same
    src, dest = _split(new.group_keys, _DPID_BITS)
    gids = np.where(same, _gather(installed.group_ids, gpos), group_id(dest, 0))
    if changed.any():
        gids[changed] = group_id(dest[changed], (installed.group_ids[gpos[changed]] & 1) ^ 1)
    gstill, _ = _lookup(new.group_keys, old.group_keys)
    removed = np.flatnonzero(~gstill)

    def labels(kind, keys, ports=None):
        d, lab = _split(keys, _LABEL_BITS)
        return OpBatch(kind, d, label=lab, port=_EMPTY if ports is None else ports)

    def groups(kind, idx, keys=new.group_keys, gid=gids):
        d, dd = _split(keys[idx], _DPID_BITS)
        return OpBatch(kind, d, group_id=gid[idx], dest_dpid=dd)

    put = np.flatnonzero(~same)
    rows = _ranges(new.group_ptr, put)
    add_groups = OpBatch(OpKind.ADD_GROUP, src[put], group_id=gids[put], dest_dpid=dest[put],
                         bucket_ptr=np.concatenate([[0], np.cumsum(n_new[put])]).astype(np.int64),
                         bucket_label=new.bucket_label[rows], bucket_port=new.bucket_port[rows],
                         bucket_weight=new.bucket_weight[rows])
    moved = np.flatnonzero(changed)
    old_gid_of_moved = np.zeros(new.group_keys.size, dtype=np.int64)
    if moved.size:
        old_gid_of_moved[moved] = installed.group_ids[gpos[moved]]
    # Old groups to delete (moved pairs and removed pairs), one batch sorted by switch.
    del_keys = np.concatenate([new.group_keys[moved], old.group_keys[removed]])
    del_gids = np.concatenate([old_gid_of_moved[moved], installed.group_ids[removed]])
    order = np.argsort(del_keys >> _DPID_BITS, kind="stable")
    steps = [
        (Phase.LABELS, (labels(OpKind.ADD_LABEL, new.label_keys[add_l], new.label_ports[add_l]),
                        labels(OpKind.MODIFY_LABEL, new.label_keys[mod_l], new.label_ports[mod_l]))),
        (Phase.GROUPS, (add_groups,)),
        (Phase.CLASSIFY, (groups(OpKind.ADD_CLASS, np.flatnonzero(~same & ~changed)),
                          groups(OpKind.MODIFY_CLASS, moved))),
        (Phase.DELETE_CLASS, (groups(OpKind.DELETE_CLASS, removed, old.group_keys, installed.group_ids),)),
        (Phase.DELETE_GROUPS, (groups(OpKind.DELETE_GROUP, order, del_keys, del_gids),)),
        (Phase.DELETE_LABELS, (labels(OpKind.DELETE_LABEL, old.label_keys[del_l]),)),
    ]
    steps = tuple((ph, tuple(b for b in batches if len(b))) for ph, batches in steps)
    return Plan(tuple((ph, bs) for ph, bs in steps if bs), Installed(desired, gids.astype(np.int64)))
