"""Make-before-break update plans: the ordered switch operations that move the network from what is
installed to a new DesiredState without dropping packets.

Phases (the glue sends one phase, waits for barrier replies from every switch it touched, then sends
the next):
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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

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


@dataclass(frozen=True)
class Op:
    kind: OpKind
    dpid: int
    label: int = 0
    port: int = 0  # label ops: output port or groups.POP
    group_id: int = 0
    dest_dpid: int = 0  # group/classification ops: the egress switch
    buckets: tuple[Bucket, ...] = ()


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


@dataclass(frozen=True)
class Plan:
    phases: tuple[tuple[Op, ...], ...]  # non-empty phases only, in order
    after: Installed

    @property
    def ops(self) -> list[Op]:
        return [op for phase in self.phases for op in phase]

    @property
    def group_updates(self) -> int:
        return sum(op.kind is OpKind.ADD_GROUP for op in self.ops)


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


def _split_key(k: int, bits: int) -> tuple[int, int]:
    return k >> bits, k & ((1 << bits) - 1)


def plan_update(installed: Installed, desired: DesiredState) -> Plan:
    """Ordered operations from ``installed`` to ``desired`` (vectorised diff; Python only per change)."""
    old, new = installed.state, desired
    # ---- labels
    found, pos = _lookup(old.label_keys, new.label_keys)
    add_l = np.flatnonzero(~found)
    mod_l = np.flatnonzero(found & (_gather(old.label_ports, pos) != new.label_ports))
    gone, _ = _lookup(new.label_keys, old.label_keys)
    del_l = np.flatnonzero(~gone)
    # ---- groups: a pair's group is unchanged when its bucket rows are identical
    gfound, gpos = _lookup(old.group_keys, new.group_keys)
    n_new = np.diff(new.group_ptr)
    n_old = np.diff(old.group_ptr)
    same = gfound.copy()
    same[gfound] &= n_new[gfound] == _gather(n_old, gpos[gfound])
    cand = np.flatnonzero(same)
    if cand.size:
        r_new = _ranges(new.group_ptr, cand)
        r_old = _ranges(old.group_ptr, gpos[cand])
        diff_row = ((new.bucket_label[r_new] != old.bucket_label[r_old]) |
                    (new.bucket_port[r_new] != old.bucket_port[r_old]) |
                    (new.bucket_weight[r_new] != old.bucket_weight[r_old]))
        owner = np.repeat(np.arange(cand.size), n_new[cand])
        same[cand[np.bincount(owner, weights=diff_row, minlength=cand.size) > 0]] = False
    changed = gfound & ~same
    dest = new.group_keys & ((1 << _DPID_BITS) - 1)
    gids = np.where(same, _gather(installed.group_ids, gpos), group_id(dest, 0))
    if changed.any():
        gids[changed] = group_id(dest[changed], (installed.group_ids[gpos[changed]] & 1) ^ 1)
    gstill, _ = _lookup(new.group_keys, old.group_keys)
    removed = np.flatnonzero(~gstill)

    ops_labels = [Op(OpKind.ADD_LABEL, *_split_key(k, _LABEL_BITS), port=p)
                  for k, p in zip(new.label_keys[add_l].tolist(), new.label_ports[add_l].tolist())]
    ops_labels += [Op(OpKind.MODIFY_LABEL, *_split_key(k, _LABEL_BITS), port=p)
                   for k, p in zip(new.label_keys[mod_l].tolist(), new.label_ports[mod_l].tolist())]
    ops_groups, ops_class, ops_del_class, ops_del_group = [], [], [], []
    for g in np.flatnonzero(~same).tolist():
        s_, d_ = _split_key(int(new.group_keys[g]), _DPID_BITS)
        gid = int(gids[g])
        ops_groups.append(Op(OpKind.ADD_GROUP, s_, group_id=gid, dest_dpid=d_, buckets=new.buckets(g)))
        if changed[g]:
            ops_class.append(Op(OpKind.MODIFY_CLASS, s_, group_id=gid, dest_dpid=d_))
            ops_del_group.append(Op(OpKind.DELETE_GROUP, s_, group_id=int(installed.group_ids[gpos[g]]), dest_dpid=d_))
        else:
            ops_class.append(Op(OpKind.ADD_CLASS, s_, group_id=gid, dest_dpid=d_))
    for g in removed.tolist():
        s_, d_ = _split_key(int(old.group_keys[g]), _DPID_BITS)
        ops_del_class.append(Op(OpKind.DELETE_CLASS, s_, dest_dpid=d_))
        ops_del_group.append(Op(OpKind.DELETE_GROUP, s_, group_id=int(installed.group_ids[g]), dest_dpid=d_))
    ops_del_labels = [Op(OpKind.DELETE_LABEL, *_split_key(k, _LABEL_BITS)) for k in old.label_keys[del_l].tolist()]

    phases = [ops_labels, ops_groups, ops_class, ops_del_class, ops_del_group, ops_del_labels]
    return Plan(tuple(tuple(p) for p in phases if p), Installed(desired, gids.astype(np.int64)))
