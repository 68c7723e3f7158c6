"""Plan batches -> OpenFlow 1.5 bytes in bulk (numpy), identical to what os-ken serialises per message.

Encoding a message through os-ken's parser objects costs tens of microseconds; a first install on a
200-node WAN is millions of messages. Here each operation kind has a byte template, serialised once
by os-ken from ``ofmsgs.op_message`` (so the message layout lives there only), and the positions of
its variable fields, found by serialising the template with two different values of each field and
comparing the bytes. A batch is then the template repeated and its fields written column-wise.
ADD_GROUP messages have a variable number of buckets: head, bucket and tail templates are laid out
at computed offsets. The result is one byte array per batch plus the offset of each message, rows in
switch order, which the glue slices per switch and sends without building a Python object per rule.
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
_LENGTH_AT = 2
_GROUP_HEAD = 24  # ofp_group_mod up to its buckets
_BUCKET_ARRAY_LEN_AT = 16
_BUCKET_ID_AT = 4  # ofp_bucket: len u16, action_array_len u16, bucket_id u32
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


@dataclass(frozen=True)
class _GroupTemplate:
    head: _Template
    bucket: _Template
    tail: np.ndarray


@lru_cache(maxsize=None)
def _group() -> _GroupTemplate:
    def one(group_id=1, label=1, port=1, weight=1, n=1):
        return Op(OpKind.ADD_GROUP, 1, group_id=group_id, dest_dpid=1, buckets=(Bucket(label, port, weight),) * n)

    m1, m2 = _bytes(one()), _bytes(one(n=2))
    size = m2.size - m1.size
    head = _template(lambda group_id: one(group_id=group_id), ("group_id",))
    bucket = _template(lambda label, port, weight: one(label=label, port=port, weight=weight),
                       ("label", "port", "weight"))
    shift = {n: tuple((o - _GROUP_HEAD, w) for o, w in runs) for n, runs in bucket.fields.items()}
    if any(not 0 <= o < size for runs in shift.values() for o, _ in runs):
        raise AssertionError("a bucket field lies outside the bucket")
    return _GroupTemplate(_Template(m1[:_GROUP_HEAD], head.fields),
                          _Template(m1[_GROUP_HEAD:_GROUP_HEAD + size], shift), m1[_GROUP_HEAD + size:])


def _put(out: np.ndarray, at: np.ndarray, width: int, values: np.ndarray) -> None:
    """Write ``values`` big-endian, ``width`` bytes each, at byte offsets ``at`` of ``out``."""
    values = np.asarray(values, dtype=np.uint64)
    shifts = (8 * np.arange(width - 1, -1, -1)).astype(np.uint64)
    out[at[:, None] + np.arange(width)] = ((values[:, None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)


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


def _fill_fixed(t: _Template, n: int, columns: dict[str, np.ndarray]) -> np.ndarray:
    """n copies of a fixed-size template with their fields written."""
    size = t.data.size
    block = np.tile(t.data, n)
    starts = np.arange(n, dtype=np.int64) * size
    for name, runs in t.fields.items():
        for off, width in runs:
            _put(block, starts + off, width, columns[name])
    return block


def encode(batch: OpBatch, xid_base: int = 0) -> Encoded:
    """The OpenFlow bytes of every operation of ``batch`` (xids ``xid_base + i``)."""
    n = len(batch)
    if n and np.any(np.diff(batch.dpid) < 0):
        raise ValueError("batch rows must be sorted by switch")
    if batch.kind is OpKind.ADD_GROUP:
        data, offsets = _encode_groups(batch)
    elif batch.kind in (OpKind.ADD_LABEL, OpKind.MODIFY_LABEL):
        data, offsets = _encode_labels(batch)
    else:
        t = _fixed(batch.kind)
        cols = {name: batch.column(name) for name in t.fields}
        data = _fill_fixed(t, n, cols)
        offsets = np.arange(n + 1, dtype=np.int64) * t.data.size
    if n:
        _put(data, offsets[:-1] + _XID_AT, 4, (xid_base + np.arange(n, dtype=np.int64)) & 0xFFFFFFFF)
    return Encoded(batch.dpid, offsets, data)


def _encode_labels(batch: OpBatch) -> tuple[np.ndarray, np.ndarray]:
    """Transit (output) and egress (pop) label rules differ in size: lay both out in row order."""
    pop = batch.port == POP
    t_out, t_pop = _fixed(batch.kind, False), _fixed(batch.kind, True)
    size = np.where(pop, t_pop.data.size, t_out.data.size)
    offsets = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for t, sel in ((t_out, ~pop), (t_pop, pop)):
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            continue
        block = _fill_fixed(t, idx.size, {"label": batch.label[idx], "port": batch.port[idx]})
        data[(offsets[idx][:, None] + np.arange(t.data.size)).ravel()] = block
    return data, offsets


def _encode_groups(batch: OpBatch) -> tuple[np.ndarray, np.ndarray]:
    g = _group()
    n = len(batch)
    nb = np.diff(batch.bucket_ptr)
    hsize, bsize, tsize = g.head.data.size, g.bucket.data.size, g.tail.size
    size = hsize + nb * bsize + tsize
    offsets = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    starts = offsets[:-1]
    data[(starts[:, None] + np.arange(hsize)).ravel()] = np.tile(g.head.data, n)
    for off, width in g.head.fields["group_id"]:
        _put(data, starts + off, width, batch.group_id)
    _put(data, starts + _LENGTH_AT, 2, size)
    _put(data, starts + _BUCKET_ARRAY_LEN_AT, 2, nb * bsize)
    # Buckets: row r of message i sits at start_i + head + (r - bucket_ptr[i]) * bucket size.
    owner = np.repeat(np.arange(n), nb)
    k = np.arange(nb.sum()) - batch.bucket_ptr[owner]
    bstart = starts[owner] + hsize + k * bsize
    data[(bstart[:, None] + np.arange(bsize)).ravel()] = np.tile(g.bucket.data, k.size)
    _put(data, bstart + _BUCKET_ID_AT, 4, k)
    cols = {"label": batch.bucket_label, "port": batch.bucket_port, "weight": batch.bucket_weight}
    for name, runs in g.bucket.fields.items():
        for off, width in runs:
            _put(data, bstart + off, width, cols[name])
    tstart = starts + hsize + nb * bsize
    data[(tstart[:, None] + np.arange(tsize)).ravel()] = np.tile(g.tail, n)
    return data, offsets


def encode_plan_round(batches: list[OpBatch], xid_base: int = 0) -> list[Encoded]:
    """Every batch of one barrier round, xids consecutive across them."""
    out, xid = [], xid_base
    for b in batches:
        out.append(encode(b, xid))
        xid += len(b)
    return out
