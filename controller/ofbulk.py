"""Plan batches -> OpenFlow 1.5 bytes in bulk (numpy), identical to what os-ken serialises per message.

Encoding a message through os-ken's parser objects costs tens of microseconds; a first install on a
200-node WAN is millions of messages. Here each operation kind has a byte template, serialised once
by os-ken from ``ofmsgs.op_message`` (so the message layout lives there only), and the positions of
its variable fields, found by serialising the template with two different values of each field and
comparing the bytes. A batch is then the template repeated and its fields written column-wise.
ADD_GROUP messages have a template per bucket count. The result is a few blocks of equal-size
messages per batch, rows in switch order, which the glue slices per switch and sends without building
a Python object per rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from .groups import POP, Bucket
from .ofmsgs import op_message
from .planner import Op, OpBatch, OpKind

_DP = SimpleNamespace(ofproto=ofp, ofproto_parser=parser)  # serialising needs only these
_XID_AT = 4  # OpenFlow header: version u8, type u8, length u16, xid u32
#: Two values per field whose big-endian bytes differ in every byte the field can use.
_PROBES = {"label": (1, 0xFFFFE), "port": (1, 0xFFFFFFFE), "group_id": (1, 0xFFFFFFFE),
           "dest_dpid": (1, 0xFFFE), "weight": (1, 0xFFFE)}


def _bytes(op: Op) -> np.ndarray:
    msg = op_message(_DP, op)
    msg.set_xid(0)
    msg.serialize()
    return np.frombuffer(bytes(msg.buf), dtype=np.uint8)


def _runs(a: np.ndarray, b: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(start, width) of each run of positions where a and b differ."""
    if a.size != b.size:
        raise AssertionError("an OpenFlow template changed length with a field's value")
    pos = np.flatnonzero(a != b)
    if pos.size == 0:
        raise AssertionError("a field does not appear in its OpenFlow template")
    cuts = np.flatnonzero(np.diff(pos) > 1) + 1
    return tuple((int(r[0]), int(r.size)) for r in np.split(pos, cuts))


@dataclass(frozen=True)
class _Template:
    data: np.ndarray  # uint8
    fields: dict[str, tuple[tuple[int, int], ...]]  # field -> (offset, width) runs


def _template(make, names: tuple[str, ...]) -> _Template:
    base = {n: _PROBES[n][0] for n in names}
    data = _bytes(make(**base))
    fields = {}
    for n in names:
        lo, hi = (_bytes(make(**{**base, n: v})) for v in _PROBES[n])
        fields[n] = _runs(lo, hi)
    return _Template(data, fields)


@lru_cache(maxsize=None)
def _fixed(kind: OpKind, pop: bool = False) -> _Template:
    if kind in (OpKind.ADD_LABEL, OpKind.MODIFY_LABEL):
        if pop:
            return _template(lambda label: Op(kind, 1, label=label, port=POP), ("label",))
        return _template(lambda label, port: Op(kind, 1, label=label, port=port), ("label", "port"))
    if kind is OpKind.DELETE_LABEL:
        return _template(lambda label: Op(kind, 1, label=label), ("label",))
    if kind in (OpKind.ADD_CLASS, OpKind.MODIFY_CLASS):
        return _template(lambda dest_dpid, group_id: Op(kind, 1, group_id=group_id, dest_dpid=dest_dpid),
                         ("dest_dpid", "group_id"))
    if kind is OpKind.DELETE_CLASS:
        return _template(lambda dest_dpid: Op(kind, 1, dest_dpid=dest_dpid), ("dest_dpid",))
    if kind is OpKind.DELETE_GROUP:
        return _template(lambda group_id: Op(kind, 1, group_id=group_id), ("group_id",))
    raise ValueError(f"{kind} has no fixed-size template")


@lru_cache(maxsize=None)
def _group(buckets: int) -> _Template:
    """ADD_GROUP with ``buckets`` buckets; each bucket field has one run per bucket, in bucket order."""
    def make(group_id, label, port, weight):
        return Op(OpKind.ADD_GROUP, 1, group_id=group_id, dest_dpid=1, buckets=(Bucket(label, port, weight),) * buckets)

    t = _template(make, ("group_id", "label", "port", "weight"))
    if any(len(t.fields[f]) != buckets for f in ("label", "port", "weight")):
        raise AssertionError("a bucket field does not appear once per bucket in the group template")
    return t


def _be(values: np.ndarray, width: int) -> np.ndarray:
    """uint8 [n, width]: ``values`` big-endian."""
    return np.asarray(values, dtype=">u8").view(np.uint8).reshape(-1, 8)[:, 8 - width:]


@dataclass(frozen=True, eq=False)
class Encoded:
    """Messages of one batch: message i is ``data[offsets[i]:offsets[i+1]]``, sent to ``dpid[i]``."""

    dpid: np.ndarray
    offsets: np.ndarray
    data: np.ndarray

    def __len__(self) -> int:
        return int(self.dpid.size)

    @property
    def nbytes(self) -> int:
        return int(self.data.size)

    def switch_ranges(self) -> list[tuple[int, int, int]]:
        """[(dpid, first message, end message)] for each switch (rows are in switch order)."""
        if self.dpid.size == 0:
            return []
        cut = np.flatnonzero(np.diff(self.dpid)) + 1
        starts = np.concatenate([[0], cut])
        ends = np.concatenate([cut, [self.dpid.size]])
        return list(zip(self.dpid[starts].tolist(), starts.tolist(), ends.tolist()))

    def chunk(self, first: int, end: int) -> bytes:
        return self.data[self.offsets[first]:self.offsets[end]].tobytes()


def _encoded(t: _Template, dpid: np.ndarray, columns: dict[str, list[np.ndarray]], xids: np.ndarray) -> Encoded:
    """Messages of template t, one per row; ``columns[field][r]`` holds the values of the field's r-th
    run (one array serves every run when the list has one entry)."""
    n = int(dpid.size)
    block = np.empty((n, t.data.size), dtype=np.uint8)
    block[:] = t.data
    for name, runs in t.fields.items():
        cols = columns[name]
        for r, (off, width) in enumerate(runs):
            block[:, off:off + width] = _be(cols[r if len(cols) > 1 else 0], width)
    block[:, _XID_AT:_XID_AT + 4] = _be(xids & 0xFFFFFFFF, 4)
    return Encoded(dpid, np.arange(n + 1, dtype=np.int64) * t.data.size, block.reshape(-1))


def encode(batch: OpBatch, xid_base: int = 0) -> list[Encoded]:
    """The OpenFlow bytes of every operation of ``batch`` (row i gets xid ``xid_base + i``), as blocks of
    equal-size messages, each in switch order. A switch gets its messages block after block: the order
    among one kind's messages on one switch does not matter (nothing in a phase depends on another
    message of the phase). Label rules split into transit and egress (pop) blocks, groups into one
    block per bucket count."""
    n = len(batch)
    if n and np.any(np.diff(batch.dpid) < 0):
        raise ValueError("batch rows must be sorted by switch")
    xid = xid_base + np.arange(n, dtype=np.int64)
    blocks = []
    if batch.kind is OpKind.ADD_GROUP:
        nb = np.diff(batch.bucket_ptr)
        for c in np.unique(nb).tolist():
            rows = np.flatnonzero(nb == c)
            first = batch.bucket_ptr[rows]
            cols = {"group_id": [batch.group_id[rows]]}
            for f, col in (("label", batch.bucket_label), ("port", batch.bucket_port), ("weight", batch.bucket_weight)):
                cols[f] = [col[first + j] for j in range(c)]
            blocks.append(_encoded(_group(c), batch.dpid[rows], cols, xid[rows]))
    elif batch.kind in (OpKind.ADD_LABEL, OpKind.MODIFY_LABEL):
        pop = batch.port == POP
        for is_pop in (False, True):
            rows = np.flatnonzero(pop == is_pop)
            if rows.size:
                blocks.append(_encoded(_fixed(batch.kind, is_pop), batch.dpid[rows],
                                       {"label": [batch.label[rows]], "port": [batch.port[rows]]}, xid[rows]))
    elif n:
        t = _fixed(batch.kind)
        blocks.append(_encoded(t, batch.dpid, {name: [batch.column(name)] for name in t.fields}, xid))
    return blocks


def encode_plan_round(batches: list[OpBatch], xid_base: int = 0) -> list[Encoded]:
    """Every batch of one barrier round, xid ranges consecutive across batches."""
    out, xid = [], xid_base
    for b in batches:
        out.extend(encode(b, xid))
        xid += len(b)
    return out
