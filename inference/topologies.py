"""Registered topologies: validation of RegisterTopology requests and the model's static inputs.

Everything the model needs that does not change per request (capacities, latencies, the
path-pair map and the path-link incidence in COO form) is computed here once per registration,
so a Route call only decodes its demand vector and link state.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .errors import FailedPrecondition, InvalidArgument, ResourceExhausted

#: The model computes in float32: a value beyond this overflows to inf inside the run.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Smallest capacity the model can divide by (float32's smallest normal number).
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True, eq=False)
class TopologyArrays:
    """A validated topology in the model's input layout."""

    name: str
    node_names: tuple[str, ...]
    link_src: np.ndarray  # int64 [L]
    link_dst: np.ndarray  # int64 [L]
    capacity_bps: np.ndarray  # float32 [L]
    latency_seconds: np.ndarray  # float32 [L]
    pairs: np.ndarray  # int64 [P, 2]
    path_pair: np.ndarray  # int64 [Np]
    inc_path: np.ndarray  # int64 [nnz]
    inc_link: np.ndarray  # int64 [nnz]
    content_hash: str

    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def num_links(self) -> int:
        return int(self.link_src.shape[0])

    @property
    def num_pairs(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def num_paths(self) -> int:
        return int(self.path_pair.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory the registration holds: its arrays (plus the all-up vector) and node names."""
        arrays = (self.link_src, self.link_dst, self.capacity_bps, self.latency_seconds, self.pairs, self.path_pair,
                  self.inc_path, self.inc_link)
        return sum(a.nbytes for a in arrays) + 4 * self.num_links + sum(len(n) + 49 for n in self.node_names)

    @functools.cached_property
    def pair_starts(self) -> np.ndarray:
        """Index of each pair's first path (paths of a pair are consecutive): for per-pair sums."""
        counts = np.bincount(self.path_pair, minlength=self.num_pairs)
        return np.concatenate([[0], np.cumsum(counts[:-1])]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class RegisteredTopology:
    topology_id: str
    version: int
    arrays: TopologyArrays
    all_up: np.ndarray  # float32 [L] of ones, the link_up input when the request sends none
    registered_at_unix_seconds: float


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_len(field_name: str, arr: np.ndarray, expected: int, what: str) -> None:
    if arr.shape[0] != expected:
        raise InvalidArgument(field_name, f"has {arr.shape[0]} values, expected {expected} ({what})")


def build_topology(node_names, link_src, link_dst, capacity_bps, latency_seconds, pair_src, pair_dst,
                   pair_path_counts, path_link_counts, path_link_ids, name: str = "") -> TopologyArrays:
    """Validate a topology given as arrays (the fields of RegisterTopologyRequest) and index it.

    Raises InvalidArgument naming the first offending field.
    """
    node_names = tuple(node_names)
    n = len(node_names)
    if n == 0:
        raise InvalidArgument("node_names", "empty topology: no nodes")
    if n < 2:
        raise InvalidArgument("node_names", "a topology needs at least 2 nodes")
    if len(set(node_names)) != n:
        raise InvalidArgument("node_names", "node names must be unique")
    link_src, link_dst = (np.asarray(a, dtype=np.int64) for a in (link_src, link_dst))
    capacity, latency = (np.asarray(a, dtype=np.float64) for a in (capacity_bps, latency_seconds))
    num_links = link_src.shape[0]
    if num_links == 0:
        raise InvalidArgument("links", "empty topology: no links")
    for fname, arr in (("src_node", link_src), ("dst_node", link_dst)):
        bad = arr >= n
        if bad.any():
            i = _first(bad)
            raise InvalidArgument(f"links[{i}].{fname}", f"node index {arr[i]} is out of range ({n} nodes)")
    if (link_src == link_dst).any():
        i = _first(link_src == link_dst)
        raise InvalidArgument(f"links[{i}]", f"self-loop at node {link_src[i]}")
    bad = ~np.isfinite(capacity) | (capacity <= 0)
    if bad.any():
        i = _first(bad)
        raise InvalidArgument(f"links[{i}].capacity_bps", f"must be finite and > 0, got {capacity[i]}")
    bad = (capacity > FLOAT32_MAX) | (capacity < FLOAT32_TINY)
    if bad.any():
        i = _first(bad)
        raise InvalidArgument(f"links[{i}].capacity_bps", f"{capacity[i]} is outside the float32 range "
                                                          f"[{FLOAT32_TINY:.3g}, {FLOAT32_MAX:.3g}] the model computes in")
    bad = ~np.isfinite(latency) | (latency < 0)
    if bad.any():
        i = _first(bad)
        raise InvalidArgument(f"links[{i}].latency_seconds", f"must be finite and >= 0, got {latency[i]}")
    bad = latency > FLOAT32_MAX
    if bad.any():
        i = _first(bad)
        raise InvalidArgument(f"links[{i}].latency_seconds", f"{latency[i]} overflows float32 (max "
                                                             f"{FLOAT32_MAX:.3g}), the type the model computes in")

    pair_src, pair_dst, pair_counts, link_counts, links = (
        np.asarray(a, dtype=np.int64) for a in (pair_src, pair_dst, pair_path_counts, path_link_counts, path_link_ids))
    num_pairs = pair_src.shape[0]
    if num_pairs == 0:
        raise InvalidArgument("paths.pair_src_nodes", "empty topology: no pairs to route")
    _check_len("paths.pair_dst_nodes", pair_dst, num_pairs, "one per pair")
    _check_len("paths.pair_path_counts", pair_counts, num_pairs, "one per pair")
    for fname, arr in (("paths.pair_src_nodes", pair_src), ("paths.pair_dst_nodes", pair_dst)):
        bad = arr >= n
        if bad.any():
            i = _first(bad)
            raise InvalidArgument(f"{fname}[{i}]", f"node index {arr[i]} is out of range ({n} nodes)")
    if (pair_src == pair_dst).any():
        i = _first(pair_src == pair_dst)
        raise InvalidArgument(f"paths.pair_dst_nodes[{i}]", "a pair's destination equals its source")
    key = pair_src * n + pair_dst
    if np.unique(key).shape[0] != num_pairs:
        _, first_idx, counts = np.unique(key, return_index=True, return_counts=True)
        i = int(first_idx[counts > 1].min())
        raise InvalidArgument("paths.pair_src_nodes",
                              f"pair {i} ({pair_src[i]} -> {pair_dst[i]}) is listed twice")
    if (pair_counts < 1).any():
        i = _first(pair_counts < 1)
        raise InvalidArgument(f"paths.pair_path_counts[{i}]", "every pair needs at least one path")
    num_paths = int(pair_counts.sum())
    _check_len("paths.path_link_counts", link_counts, num_paths, "sum of pair_path_counts")
    if (link_counts < 1).any():
        j = _first(link_counts < 1)
        raise InvalidArgument(f"paths.path_link_counts[{j}]", "every path needs at least one link")
    nnz = int(link_counts.sum())
    _check_len("paths.path_link_ids", links, nnz, "sum of path_link_counts")
    bad = links >= num_links
    if bad.any():
        k = _first(bad)
        raise InvalidArgument(f"paths.path_link_ids[{k}]",
                              f"link {links[k]} does not exist (the topology has {num_links} links)")

    path_pair = np.repeat(np.arange(num_pairs, dtype=np.int64), pair_counts)
    ends = np.cumsum(link_counts)
    starts = ends - link_counts
    # Node tables in int32 halve the memory traffic of the two 50M-entry gathers on Kdl.
    tail = link_src.astype(np.int32)[links]  # tail node of every path-link entry
    head = link_dst.astype(np.int32)[links]
    bad = tail[starts] != pair_src[path_pair]
    if bad.any():
        j = _first(bad)
        raise InvalidArgument("paths.path_link_ids", f"path {j} does not start at its pair's source node "
                                                     f"{pair_src[path_pair[j]]}")
    bad = head[ends - 1] != pair_dst[path_pair]
    if bad.any():
        j = _first(bad)
        raise InvalidArgument("paths.path_link_ids", f"path {j} does not end at its pair's destination node "
                                                     f"{pair_dst[path_pair[j]]}")
    # Entry k and k+1 of the same path must meet; entries that end a path are exempt.
    mismatch = head[:-1] != tail[1:]
    mismatch[ends[:-1] - 1] = False
    if mismatch.any():
        k = _first(mismatch)
        j = int(np.searchsorted(ends, k, side="right"))
        raise InvalidArgument(f"paths.path_link_ids[{k + 1}]",
                              f"path {j} has consecutive links {links[k]} and {links[k + 1]} that do not meet")
    del tail, head, mismatch
    inc_path = np.repeat(np.arange(num_paths, dtype=np.int64), link_counts)

    h = hashlib.sha256()
    h.update("\0".join(node_names).encode())
    for arr in (link_src, link_dst, capacity, latency, pair_src, pair_dst, pair_counts, link_counts):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(np.ascontiguousarray(links, dtype=np.int32).tobytes())
    return TopologyArrays(name=name, node_names=node_names, link_src=link_src, link_dst=link_dst,
                          capacity_bps=capacity.astype(np.float32), latency_seconds=latency.astype(np.float32),
                          pairs=np.stack([pair_src, pair_dst], axis=1), path_pair=path_pair, inc_path=inc_path,
                          inc_link=links, content_hash=h.hexdigest()[:16])


#: Default memory bound of the registered topologies (Kdl with k=4 paths per pair holds about 0.9 GB).
DEFAULT_MAX_TOPOLOGY_BYTES = 4 * 1024**3


@dataclass(eq=False)
class TopologyStore:
    """Registered topologies by id, each with a version that goes up when its content changes.

    Holds at most ``max_topologies`` ids and ``max_bytes`` of arrays; the least recently *used*
    (registered or routed) is dropped first, so a controller that routes every second is never pushed
    out by registrations nobody routes on (dropped callers get FAILED_PRECONDITION and register
    again). One registration larger than ``max_bytes`` is refused with RESOURCE_EXHAUSTED.
    """

    max_topologies: int = 64
    max_bytes: int = DEFAULT_MAX_TOPOLOGY_BYTES
    _items: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bytes: int = 0

    def register(self, topology_id: str, arrays: TopologyArrays) -> tuple[RegisteredTopology, bool]:
        size = arrays.nbytes
        if size > self.max_bytes:
            raise ResourceExhausted(f"the topology needs {size / 2**20:.1f} MiB of server memory, more than this "
                                    f"server keeps for all topologies ({self.max_bytes / 2**20:.1f} MiB, "
                                    "--max-topology-bytes)")
        with self._lock:
            old = self._items.get(topology_id)
            if old is not None and old.arrays.content_hash == arrays.content_hash:
                self._items.move_to_end(topology_id)
                return old, False
            version = old.version + 1 if old is not None else 1
            reg = RegisteredTopology(topology_id=topology_id, version=version, arrays=arrays,
                                     all_up=np.ones(arrays.num_links, dtype=np.float32),
                                     registered_at_unix_seconds=time.time())
            if old is not None:
                self._bytes -= old.arrays.nbytes
            self._items[topology_id] = reg
            self._items.move_to_end(topology_id)
            self._bytes += size
            while len(self._items) > self.max_topologies or self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)  # never the new one: it fits on its own
                self._bytes -= dropped.arrays.nbytes
            return reg, True

    def get(self, topology_id: str, version: int) -> RegisteredTopology:
        with self._lock:  # O(1): a lookup and a move to the most recently used end
            reg = self._items.get(topology_id)
            if reg is not None:
                self._items.move_to_end(topology_id)
        if reg is None:
            if not topology_id:
                raise InvalidArgument("topology_id", "is empty; pass the id returned by RegisterTopology")
            raise FailedPrecondition(f"topology_id {topology_id!r} is not registered on this server "
                                     "(register it first; servers forget topologies when they restart)")
        if version != reg.version:
            raise FailedPrecondition(f"topology_version {version} of {topology_id!r} is stale: the current "
                                     f"version is {reg.version}; re-register or use the current version")
        return reg

    def peek(self, topology_id: str) -> TopologyArrays | None:
        """The arrays registered under ``topology_id`` (None: not registered), without counting a use."""
        with self._lock:
            reg = self._items.get(topology_id)
        return reg.arrays if reg is not None else None

    def registered(self) -> list[RegisteredTopology]:
        """Every registered topology, least recently used first."""
        with self._lock:
            return list(self._items.values())

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
