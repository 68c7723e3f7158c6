"""Candidate paths per ordered node pair, held as a sparse path-link incidence, and their file format.

A PathSet is the action space of every router: split ratios are one number per path, link loads are
``incidence.T @ (split * demand_of_path)`` (one sparse mat-vec), and MLU is their max over capacity.
How paths are chosen lives in ``tecore.strategies`` / ``tecore.paths``; this module only holds them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .topology import Topology

#: Version of the .npz files written by ``PathSet.save``; a file of another version is rejected (and
#: recomputed by the cache). Raised whenever the layout or what a strategy computes changes.
_CACHE_VERSION = 3


class PathError(ValueError):
    """A path set that does not fit the topology or request."""


@dataclass(frozen=True, eq=False)
class PathSet:
    topology_hash: str
    num_nodes: int
    num_links: int
    pairs: np.ndarray  # int64 [P, 2] (src, dst) node indices
    pair_ptr: np.ndarray  # int64 [P+1]: paths of pair i are pair_ptr[i]:pair_ptr[i+1]
    path_ptr: np.ndarray  # int64 [Np+1]: links of path j are path_links[path_ptr[j]:path_ptr[j+1]]
    path_links: np.ndarray  # int64 [nnz]: link ids in traversal order
    strategy: str = "shortest"
    k: int = 4

    def __post_init__(self) -> None:
        for name in ("pairs", "pair_ptr", "path_ptr", "path_links"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.int64))
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise PathError("pairs must have shape [P, 2]")
        if self.pair_ptr.shape != (self.pairs.shape[0] + 1,) or self.pair_ptr[0] != 0:
            raise PathError("pair_ptr must have P+1 entries starting at 0")
        if self.path_ptr[-1] != self.path_links.shape[0] or self.pair_ptr[-1] != self.path_ptr.shape[0] - 1:
            raise PathError("path offsets do not match the link list")
        if np.any(np.diff(self.pair_ptr) < 1):
            raise PathError("every pair needs at least one path")
        if np.any(np.diff(self.path_ptr) < 1):
            raise PathError("every path needs at least one link")
        if self.path_links.size and (self.path_links.min() < 0 or self.path_links.max() >= self.num_links):
            raise PathError("a path refers to a link id outside the topology")

    # ------------------------------------------------------------------ shape
    @property
    def num_pairs(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def num_paths(self) -> int:
        return int(self.path_ptr.shape[0] - 1)

    @cached_property
    def paths_per_pair(self) -> np.ndarray:
        return np.diff(self.pair_ptr)

    @cached_property
    def path_pair(self) -> np.ndarray:
        """Pair index of each path: int64 [Np]."""
        return np.repeat(np.arange(self.num_pairs, dtype=np.int64), self.paths_per_pair)

    @cached_property
    def path_hops(self) -> np.ndarray:
        return np.diff(self.path_ptr)

    @cached_property
    def incidence(self) -> sp.csr_matrix:
        """Path-link incidence, float64 CSR [Np, L] (1 where path j uses link l)."""
        data = np.ones(self.path_links.shape[0], dtype=np.float64)
        m = sp.csr_matrix((data, self.path_links, self.path_ptr), shape=(self.num_paths, self.num_links))
        m.sort_indices()
        return m

    @cached_property
    def pair_lookup(self) -> np.ndarray:
        """Dense [N, N] map from (src, dst) to pair index, -1 where the pair has no paths."""
        lut = np.full((self.num_nodes, self.num_nodes), -1, dtype=np.int64)
        lut[self.pairs[:, 0], self.pairs[:, 1]] = np.arange(self.num_pairs)
        return lut

    def path_cost(self, link_metric: np.ndarray) -> np.ndarray:
        """Sum of a per-link metric along each path: float64 [Np]."""
        return self.incidence @ np.asarray(link_metric, dtype=np.float64)

    def path_nodes(self, topo: Topology, j: int) -> list[int]:
        links = self.path_links[self.path_ptr[j]:self.path_ptr[j + 1]]
        return [int(topo.src[links[0]])] + [int(x) for x in topo.dst[links]]

    def check(self, topo: Topology) -> None:
        """Verify that every path is a loop-free walk from its pair's src to its dst in ``topo``."""
        if topo.content_hash != self.topology_hash:
            raise PathError(f"path set was built for topology {self.topology_hash}, not {topo.content_hash}")
        links = self.path_links
        starts, ends = self.path_ptr[:-1], self.path_ptr[1:] - 1
        if np.any(topo.src[links[starts]] != self.pairs[self.path_pair, 0]):
            raise PathError("a path does not start at its pair's source")
        if np.any(topo.dst[links[ends]] != self.pairs[self.path_pair, 1]):
            raise PathError("a path does not end at its pair's destination")
        inner = np.ones(links.shape[0], dtype=bool)
        inner[ends] = False
        if np.any(topo.dst[links[inner]] != topo.src[links[np.flatnonzero(inner) + 1]]):
            raise PathError("a path has consecutive links that do not meet")
        # Loop-free: no node repeats. A path of h links visits h+1 nodes.
        for j in range(self.num_paths):
            nodes = self.path_nodes(topo, j)
            if len(set(nodes)) != len(nodes):
                raise PathError(f"path {j} revisits a node: {nodes}")

    # ------------------------------------------------------------------ I/O
    def save(self, file: str | os.PathLike) -> None:
        file = Path(file)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, topology_hash=self.topology_hash, num_nodes=self.num_nodes,
                            num_links=self.num_links, pairs=self.pairs, pair_ptr=self.pair_ptr,
                            path_ptr=self.path_ptr, path_links=self.path_links, strategy=self.strategy,
                            k=self.k, version=_CACHE_VERSION)
        os.replace(tmp, file)  # atomic: a crash never leaves half a cache file

    @classmethod
    def load(cls, file: str | os.PathLike) -> "PathSet":
        with np.load(file, allow_pickle=False) as z:
            if int(z["version"]) != _CACHE_VERSION:
                raise PathError(f"{file}: cache version {int(z['version'])} != {_CACHE_VERSION}")
            return cls(topology_hash=str(z["topology_hash"]), num_nodes=int(z["num_nodes"]),
                       num_links=int(z["num_links"]), pairs=z["pairs"], pair_ptr=z["pair_ptr"],
                       path_ptr=z["path_ptr"], path_links=z["path_links"], strategy=str(z["strategy"]),
                       k=int(z["k"]))

    def to_node_lists(self, topo: Topology) -> dict[str, list[list[str]]]:
        """{"src->dst": [[node names of path], ...]} for tools outside tellm."""
        out = {}
        for i, (s, d) in enumerate(self.pairs):
            key = f"{topo.nodes[s]}->{topo.nodes[d]}"
            out[key] = [[topo.nodes[n] for n in self.path_nodes(topo, j)]
                        for j in range(self.pair_ptr[i], self.pair_ptr[i + 1])]
        return out

    @classmethod
    def from_node_paths(cls, topo: Topology, paths: dict[tuple[int, int], list[list[int]]],
                        strategy: str = "custom", k: int | None = None) -> "PathSet":
        """Build from {(src, dst): [node index lists]}; pairs are kept in sorted order."""
        li = topo.link_index
        pairs, pair_ptr, path_ptr, links = [], [0], [0], []
        for key in sorted(paths):
            plist = paths[key]
            if not plist:
                continue
            for nodes in plist:
                try:
                    links.extend(li[(nodes[i], nodes[i + 1])] for i in range(len(nodes) - 1))
                except KeyError as exc:
                    raise PathError(f"path {nodes} uses a missing link {exc.args[0]}") from None
                path_ptr.append(len(links))
            pairs.append(key)
            pair_ptr.append(len(path_ptr) - 1)
        return cls(topology_hash=topo.content_hash, num_nodes=topo.num_nodes, num_links=topo.num_links,
                   pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2), pair_ptr=np.array(pair_ptr),
                   path_ptr=np.array(path_ptr), path_links=np.array(links, dtype=np.int64),
                   strategy=strategy, k=k or max((len(v) for v in paths.values()), default=0))
