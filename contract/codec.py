"""Conversions between Python objects and the tellm.v1 messages: numpy arrays and packed repeated
fields, tecore objects and RegisterTopologyRequest, policies and PolicyService's messages.

Packed fields are written by hand rather than with ``msg.field.extend(array)``: protobuf's Python
API converts element by element, which costs ~35 ns per value (80 ms for Kdl's 2.27M split ratios)
while the wire format of a packed field is simply ``tag, byte length, values``. These helpers write
exactly that wire format with numpy and merge it into the message (``MergeFromString``), so the
bytes on the wire are standard protobuf that any client decodes; reading back goes through
``np.asarray(msg.field)``, which upb serves at memory speed.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .policies import AppliedPolicy, make_policy
from .v1 import policy_pb2 as policy_pb
from .v1 import traffic_engineering_service_pb2 as pb

# Fixed-width scalar types: their packed payload is the little-endian array itself.
_FIXED_DTYPES = {
    FieldDescriptor.TYPE_FLOAT: "<f4",
    FieldDescriptor.TYPE_DOUBLE: "<f8",
    FieldDescriptor.TYPE_FIXED32: "<u4",
    FieldDescriptor.TYPE_FIXED64: "<u8",
    FieldDescriptor.TYPE_SFIXED32: "<i4",
    FieldDescriptor.TYPE_SFIXED64: "<i8",
}
_VARINT_TYPES = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64}
_WIRE_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_varints(values: np.ndarray) -> bytes:
    """Protobuf base-128 varint encoding of non-negative integers, vectorised.

    Lays every value out as ``width`` candidate bytes (7 bits each, continuation bit set when more
    bits follow) in an [n, width] table, then keeps each value's significant bytes with one boolean
    compress: a handful of passes over the data whatever its size.
    """
    v = np.asarray(values)
    if v.size == 0:
        return b""
    v = v.astype(np.uint32 if int(v.max()) < 2**32 else np.uint64, copy=False)
    width = max(1, (int(v.max()).bit_length() + 6) // 7)  # bytes of the largest value
    if width == 1:
        return v.astype(np.uint8).tobytes()
    table = np.empty((v.shape[0], width), dtype=np.uint8)
    keep = np.empty((v.shape[0], width), dtype=bool)
    for k in range(width):
        rest = v >> v.dtype.type(7 * k)
        more = rest > 0x7F
        table[:, k] = (rest & 0x7F).astype(np.uint8) | (more.astype(np.uint8) << 7)
        keep[:, k] = True if k == 0 else (rest > 0)
    return table[keep].tobytes()


def set_packed(msg: Message, field_name: str, values: np.ndarray) -> None:
    """Set repeated scalar ``field_name`` of ``msg`` (which must be empty) to ``values``."""
    fd = msg.DESCRIPTOR.fields_by_name[field_name]
    if not fd.is_repeated:
        raise TypeError(f"{msg.DESCRIPTOR.name}.{field_name} is not a repeated field")
    if len(getattr(msg, field_name)):
        raise ValueError(f"{msg.DESCRIPTOR.name}.{field_name} already has values")
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{field_name}: expected a 1-D array, got shape {values.shape}")
    if values.size == 0:
        return
    if fd.type in _FIXED_DTYPES:
        payload = np.ascontiguousarray(values, dtype=_FIXED_DTYPES[fd.type]).tobytes()
    elif fd.type in _VARINT_TYPES:
        if values.dtype.kind not in "iub":
            raise TypeError(f"{field_name}: expected integers, got {values.dtype}")
        if values.dtype.kind == "i" and values.min() < 0:
            raise ValueError(f"{field_name}: negative value for an unsigned field")
        if fd.type == FieldDescriptor.TYPE_UINT32 and values.max() > 0xFFFFFFFF:
            raise ValueError(f"{field_name}: value does not fit uint32")
        payload = encode_varints(values)
    elif fd.type == FieldDescriptor.TYPE_BOOL:
        payload = np.ascontiguousarray(values, dtype=bool).astype(np.uint8).tobytes()
    else:  # other types are rare here; the plain API is correct, just slower
        getattr(msg, field_name).extend(values.tolist())
        return
    tag = _varint((fd.number << 3) | _WIRE_LENGTH_DELIMITED)
    msg.MergeFromString(tag + _varint(len(payload)) + payload)


def get_array(msg: Message, field_name: str, dtype) -> np.ndarray:
    """A repeated scalar field as a numpy array (upb copies it without a Python loop)."""
    return np.asarray(getattr(msg, field_name), dtype=dtype)


def register_request(topo, paths, topology_id: str | None = None):
    """RegisterTopologyRequest for a tecore Topology and PathSet (pairs and paths keep their order)."""
    if paths.num_links != topo.num_links or paths.num_nodes != topo.num_nodes:
        raise ValueError(f"path set has {paths.num_nodes} nodes / {paths.num_links} links, "
                         f"topology {topo.name!r} has {topo.num_nodes} / {topo.num_links}")
    req = pb.RegisterTopologyRequest(topology_id=topology_id or topo.name, name=topo.name,
                                     node_names=list(topo.nodes))
    req.links.extend(pb.Link(src_node=int(s), dst_node=int(d), capacity_bps=float(c), latency_seconds=float(t))
                     for s, d, c, t in zip(topo.src, topo.dst, topo.capacity_bps, topo.latency_seconds))
    set_packed(req.paths, "pair_src_nodes", paths.pairs[:, 0])
    set_packed(req.paths, "pair_dst_nodes", paths.pairs[:, 1])
    set_packed(req.paths, "pair_path_counts", np.diff(paths.pair_ptr))
    set_packed(req.paths, "path_link_counts", np.diff(paths.path_ptr))
    set_packed(req.paths, "path_link_ids", paths.path_links)
    return req


# --------------------------------------------------------------------------- PolicyService messages
def applied_to_pb(a: AppliedPolicy) -> policy_pb.AppliedPolicy:
    return policy_pb.AppliedPolicy(topology_id=a.topology_id, policy_name=a.policy.name, params=dict(a.policy.params),
                                   policy_vector=a.policy.to_vector().tolist(), version=a.version,
                                   applied_at_unix_seconds=a.applied_at_unix_seconds, reason=a.reason, actor=a.actor,
                                   inherited_default=a.inherited_default)


def applied_from_pb(m: policy_pb.AppliedPolicy) -> AppliedPolicy:
    return AppliedPolicy(m.topology_id, make_policy(m.policy_name, dict(m.params)), int(m.version),
                         float(m.applied_at_unix_seconds), m.reason, m.actor, bool(m.inherited_default))


def policy_descriptions_to_pb(descriptions: list[dict]) -> list[policy_pb.PolicyDescription]:
    """``list_policies()`` dicts as ListPoliciesResponse entries."""
    return [policy_pb.PolicyDescription(name=d["name"], description=d["description"], params=[
        policy_pb.ParamBounds(name=p["name"], min=p["min"], max=p["max"], default=p["default"],
                              description=p["description"]) for p in d["params"]]) for d in descriptions]


def policy_descriptions_from_pb(descriptions) -> list[dict]:
    """Inverse of ``policy_descriptions_to_pb``: the dicts ``list_policies()`` returns."""
    return [{"name": d.name, "description": d.description,
             "params": [{"name": p.name, "min": p.min, "max": p.max, "default": p.default,
                         "description": p.description} for p in d.params]} for d in descriptions]
