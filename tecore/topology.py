"""Topology model: nodes and directed links with capacity, routing weight and latency.

Everything downstream (paths, LPs, the TE head, the controller) indexes links by their position in
these arrays, so a Topology is immutable and carries a content hash that caches key on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
import numpy as np

#: Capacity given to links when a file carries none and the caller asks for no other value.
DEFAULT_CAPACITY_BPS = 10e9
#: Latency assumed for a link whose length is unknown (no coordinates in the file).
DEFAULT_LATENCY_SECONDS = 1e-3


class TopologyError(ValueError):
    """A topology file or object that cannot be used; the message says which file and why."""


@dataclass(frozen=True, eq=False)
class Topology:
    """A directed network. Undirected inputs arrive here as two links, one per direction."""

    name: str
    nodes: tuple[str, ...]
    src: np.ndarray  # int64 [L] index into nodes
    dst: np.ndarray  # int64 [L]
    capacity_bps: np.ndarray  # float64 [L]
    weight: np.ndarray  # float64 [L]: routing metric (1.0 = hop count)
    latency_seconds: np.ndarray  # float64 [L]
    coordinates: np.ndarray | None = None  # float64 [N, 2] (longitude, latitude) when known
    #: What the loader changed on the way in (dropped parallel edges, components, ...).
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.nodes)
        for name in ("src", "dst", "capacity_bps", "weight", "latency_seconds"):
            arr = np.asarray(getattr(self, name))
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "src", self.src.astype(np.int64))
        object.__setattr__(self, "dst", self.dst.astype(np.int64))
        for name in ("capacity_bps", "weight", "latency_seconds"):
            object.__setattr__(self, name, getattr(self, name).astype(np.float64))
        L = self.src.shape[0]
        if n == 0:
            raise TopologyError(f"topology {self.name!r} has no nodes")
        if len(set(self.nodes)) != n:
            raise TopologyError(f"topology {self.name!r} has duplicate node names")
        for name in ("dst", "capacity_bps", "weight", "latency_seconds"):
            if getattr(self, name).shape != (L,):
                raise TopologyError(f"topology {self.name!r}: {name} has shape "
                                    f"{getattr(self, name).shape}, expected ({L},)")
        if L and (self.src.min() < 0 or self.dst.min() < 0 or self.src.max() >= n or self.dst.max() >= n):
            raise TopologyError(f"topology {self.name!r}: link endpoint out of range")
        if np.any(self.src == self.dst):
            raise TopologyError(f"topology {self.name!r}: self-loop links are not allowed")
        if not np.all(np.isfinite(self.capacity_bps)) or np.any(self.capacity_bps <= 0):
            raise TopologyError(f"topology {self.name!r}: every link needs a finite capacity > 0 bit/s")
        if not np.all(np.isfinite(self.weight)) or np.any(self.weight <= 0):
            raise TopologyError(f"topology {self.name!r}: every link weight must be finite and > 0")
        if len(set(zip(self.src.tolist(), self.dst.tolist()))) != L:
            raise TopologyError(f"topology {self.name!r}: parallel links (same src and dst) are not allowed")

    # ----------------------------------------------------------------- basic shape
    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_links(self) -> int:
        return int(self.src.shape[0])

    @cached_property
    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.nodes)}

    @cached_property
    def link_index(self) -> dict[tuple[int, int], int]:
        """(src node index, dst node index) -> link id."""
        return {(int(u), int(v)): i for i, (u, v) in enumerate(zip(self.src, self.dst))}

    def link_name(self, link_id: int) -> str:
        return f"{self.nodes[self.src[link_id]]}->{self.nodes[self.dst[link_id]]}"

    @cached_property
    def is_symmetric(self) -> bool:
        """True when every link has a reverse link of equal weight (paths can then be mirrored)."""
        li = self.link_index
        for i, (u, v) in enumerate(zip(self.src.tolist(), self.dst.tolist())):
            j = li.get((v, u))
            if j is None or self.weight[j] != self.weight[i]:
                return False
        return True

    def all_pairs(self) -> np.ndarray:
        """All ordered (src, dst) node-index pairs with src != dst, row-major: [N*(N-1), 2]."""
        n = self.num_nodes
        s, d = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        mask = s != d
        return np.stack([s[mask], d[mask]], axis=1).astype(np.int64)

    # ------------------------------------------------------------------ identity
    @cached_property
    def content_hash(self) -> str:
        """Stable hash of everything routing depends on (names, links, capacities, weights)."""
        h = hashlib.sha256()
        h.update("\0".join(self.nodes).encode())
        for arr in (self.src, self.dst, self.capacity_bps, self.weight):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------- interop
    def to_networkx(self) -> nx.DiGraph:
        g = nx.DiGraph(name=self.name)
        for i, name in enumerate(self.nodes):
            attrs = {}
            if self.coordinates is not None:
                attrs = {"longitude": float(self.coordinates[i, 0]), "latitude": float(self.coordinates[i, 1])}
            g.add_node(name, **attrs)
        for lid in range(self.num_links):
            g.add_edge(self.nodes[self.src[lid]], self.nodes[self.dst[lid]], link_id=lid,
                       capacity_bps=float(self.capacity_bps[lid]), weight=float(self.weight[lid]),
                       latency_seconds=float(self.latency_seconds[lid]))
        return g

    @classmethod
    def from_networkx(cls, g: nx.Graph, name: str | None = None,
                      default_capacity_bps: float = DEFAULT_CAPACITY_BPS) -> "Topology":
        """Build from a networkx graph; undirected edges become two links.

        Edge attributes used when present: ``capacity_bps``, ``weight``, ``latency_seconds``.
        """
        nodes = tuple(str(n) for n in g.nodes())
        index = {n: i for i, n in enumerate(g.nodes())}
        src, dst, cap, wt, lat = [], [], [], [], []
        seen: set[tuple[int, int]] = set()

        def add(u, v, data):
            key = (index[u], index[v])
            if key in seen or key[0] == key[1]:
                return
            seen.add(key)
            src.append(key[0])
            dst.append(key[1])
            cap.append(float(data.get("capacity_bps", default_capacity_bps)))
            wt.append(float(data.get("weight", 1.0)))
            lat.append(float(data.get("latency_seconds", DEFAULT_LATENCY_SECONDS)))

        for u, v, data in g.edges(data=True):
            add(u, v, data)
            if not g.is_directed():
                add(v, u, data)
        return cls(name=name or str(g.graph.get("name") or "graph"), nodes=nodes,
                   src=np.array(src, dtype=np.int64), dst=np.array(dst, dtype=np.int64),
                   capacity_bps=np.array(cap), weight=np.array(wt), latency_seconds=np.array(lat))

    def with_capacity(self, capacity_bps: np.ndarray) -> "Topology":
        """A copy with other capacities (e.g. scaled down for a Mininet testbed)."""
        return Topology(self.name, self.nodes, self.src, self.dst, np.asarray(capacity_bps, float),
                        self.weight, self.latency_seconds, self.coordinates, self.notes)

    def summary(self) -> str:
        cap = self.capacity_bps
        return (f"{self.name}: {self.num_nodes} nodes, {self.num_links} directed links, "
                f"capacity {cap.min() / 1e9:g}-{cap.max() / 1e9:g} Gbit/s")
