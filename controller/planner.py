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

from .groups import Bucket, DesiredState


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


def group_id(dest_dpid: int, version: int) -> int:
    """Group ids of one pair alternate between two values (version 0/1)."""
    return 2 * dest_dpid + (version & 1)


@dataclass
class Installed:
    """What the controller believes the switches hold."""

    labels: dict[tuple[int, int], int] = field(default_factory=dict)
    groups: dict[tuple[int, int], tuple[int, tuple[Bucket, ...]]] = field(default_factory=dict)

    def forget_switch(self, dpid: int) -> None:
        """The switch lost (or we wiped) its state: the next plan reinstalls everything on it."""
        self.labels = {k: v for k, v in self.labels.items() if k[0] != dpid}
        self.groups = {k: v for k, v in self.groups.items() if k[0] != dpid}

    def copy(self) -> "Installed":
        return Installed(dict(self.labels), dict(self.groups))


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


def plan_update(installed: Installed, desired: DesiredState) -> Plan:
    labels_add, labels_mod, labels_del = [], [], []
    for key, port in sorted(desired.labels.items()):
        old = installed.labels.get(key)
        if old is None:
            labels_add.append(Op(OpKind.ADD_LABEL, key[0], label=key[1], port=port))
        elif old != port:
            labels_mod.append(Op(OpKind.MODIFY_LABEL, key[0], label=key[1], port=port))
    for key in sorted(installed.labels.keys() - desired.labels.keys()):
        labels_del.append(Op(OpKind.DELETE_LABEL, key[0], label=key[1]))

    groups_add, class_set, class_del, groups_del = [], [], [], []
    new_groups: dict[tuple[int, int], tuple[int, tuple[Bucket, ...]]] = {}
    for key, buckets in sorted(desired.groups.items()):
        s, d = key
        old = installed.groups.get(key)
        if old is not None and old[1] == buckets:
            new_groups[key] = old
            continue
        gid = group_id(d, 0) if old is None else group_id(d, (old[0] & 1) ^ 1)
        new_groups[key] = (gid, buckets)
        groups_add.append(Op(OpKind.ADD_GROUP, s, group_id=gid, dest_dpid=d, buckets=buckets))
        kind = OpKind.ADD_CLASS if old is None else OpKind.MODIFY_CLASS
        class_set.append(Op(kind, s, group_id=gid, dest_dpid=d))
        if old is not None:
            groups_del.append(Op(OpKind.DELETE_GROUP, s, group_id=old[0], dest_dpid=d))
    for key in sorted(installed.groups.keys() - desired.groups.keys()):
        s, d = key
        class_del.append(Op(OpKind.DELETE_CLASS, s, dest_dpid=d))
        groups_del.append(Op(OpKind.DELETE_GROUP, s, group_id=installed.groups[key][0], dest_dpid=d))

    phases = [labels_add + labels_mod, groups_add, class_set, class_del, groups_del, labels_del]
    after = Installed(dict(desired.labels), new_groups)
    return Plan(tuple(tuple(p) for p in phases if p), after)
