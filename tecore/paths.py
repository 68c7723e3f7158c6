"""Candidate paths per ordered node pair, held as a sparse path-link incidence.

A PathSet is the action space of every router: split ratios are one number per path, link loads are
``incidence.T @ (split * demand_of_path)`` (one sparse mat-vec), and MLU is their max over capacity.
Paths are computed once per (topology hash, strategy, k, metric) and cached on disk.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Literal

import networkx as nx
import numpy as np
import scipy.sparse as sp

from .topology import Topology

Metric = Literal["weight", "hop", "latency"]
_CACHE_VERSION = 1


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


# ---------------------------------------------------------------------- strategies
# A strategy maps (graph, src, dst, k, weight attribute or None) to up to k node lists.
Strategy = Callable[[nx.DiGraph, int, int, int, "str | None"], list[list[int]]]


def _k_shortest(g: nx.DiGraph, s: int, t: int, k: int, weight: str | None) -> list[list[int]]:
    """Yen's k shortest loop-free paths (networkx), shortest first."""
    try:
        return list(itertools.islice(nx.shortest_simple_paths(g, s, t, weight=weight), k))
    except nx.NetworkXNoPath:
        return []


def _edge_disjoint_first(g: nx.DiGraph, s: int, t: int, k: int, weight: str | None) -> list[list[int]]:
    """Greedy edge-disjoint shortest paths first (diversity), topped up with Yen's shortest paths."""
    h = g.copy()
    out: list[list[int]] = []
    while len(out) < k:
        try:
            p = nx.shortest_path(h, s, t, weight=weight)
        except nx.NetworkXNoPath:
            break
        out.append(p)
        h.remove_edges_from(zip(p[:-1], p[1:]))
    if len(out) < k:
        for p in _k_shortest(g, s, t, 4 * k, weight):
            if p not in out:
                out.append(p)
            if len(out) == k:
                break
    return out


STRATEGIES: dict[str, Strategy] = {
    "shortest": _k_shortest,
    "edge-disjoint": _edge_disjoint_first,
}

# Worker state, inherited through fork so that each task carries only node ids.
_WORKER: dict = {}


def _work(task: tuple[int, list[int]]) -> list[tuple[int, int, list[list[int]]]]:
    s, targets = task
    g, fn, k, weight = _WORKER["g"], _WORKER["fn"], _WORKER["k"], _WORKER["weight"]
    return [(s, t, fn(g, s, t, k, weight)) for t in targets]


def _metric_graph(topo: Topology, metric: Metric) -> tuple[nx.DiGraph, str | None]:
    g = nx.DiGraph()
    g.add_nodes_from(range(topo.num_nodes))
    if metric == "hop":
        g.add_edges_from(zip(topo.src.tolist(), topo.dst.tolist()))
        return g, None
    w = topo.weight if metric == "weight" else topo.latency_seconds
    if metric == "weight" and np.all(w == 1.0):
        g.add_edges_from(zip(topo.src.tolist(), topo.dst.tolist()))
        return g, None  # unit weights: BFS is exact and several times faster than Dijkstra
    g.add_weighted_edges_from(zip(topo.src.tolist(), topo.dst.tolist(), w.tolist()))
    return g, "weight"


def cache_dir() -> Path:
    return Path(os.environ.get("TELLM_CACHE_DIR") or Path.home() / ".cache" / "tellm") / "paths"


def compute_paths(topo: Topology, k: int = 4, strategy: str = "shortest", metric: Metric = "weight",
                  workers: int | None = None, use_cache: bool = True, progress: bool = False,
                  pairs: Iterable[tuple[int, int]] | None = None) -> PathSet:
    """Up to k loop-free paths for every ordered pair (or the given pairs).

    With a symmetric topology only src < dst is searched and the reverse paths are mirrored, which
    halves the work. ``workers`` processes (default: all cores) share the sources.
    """
    if strategy not in STRATEGIES:
        raise PathError(f"unknown path strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if not 1 <= k <= 64:
        raise PathError(f"k must be between 1 and 64, got {k}")
    cache_file = None
    if use_cache and pairs is None:
        cache_file = cache_dir() / f"{topo.name}-{topo.content_hash}-{strategy}-{metric}-k{k}.npz"
        if cache_file.exists():
            try:
                return PathSet.load(cache_file)
            except Exception:  # noqa: BLE001 - a bad cache file is recomputed, never fatal
                cache_file.unlink(missing_ok=True)
    g, weight = _metric_graph(topo, metric)
    mirror = _mirrorable(topo, metric)
    if pairs is None:
        n = topo.num_nodes
        targets = {s: [t for t in range(n) if (t > s if mirror else t != s)] for s in range(n)}
    else:
        mirror = False
        targets = {}
        for s, t in pairs:
            if s != t:
                targets.setdefault(int(s), []).append(int(t))
    tasks = [(s, ts) for s, ts in targets.items() if ts]
    _WORKER.update(g=g, fn=STRATEGIES[strategy], k=k, weight=weight)
    workers = workers or os.cpu_count() or 1
    found: dict[tuple[int, int], list[list[int]]] = {}
    results: Iterable = []
    if workers > 1 and len(tasks) > 8:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"))
        results = pool.map(_work, tasks, chunksize=max(1, len(tasks) // (workers * 16)))
    else:
        pool = None
        results = map(_work, tasks)
    try:
        results = _with_progress(results, len(tasks), f"paths {topo.name} k={k}", progress)
        for chunk in results:
            for s, t, plist in chunk:
                if plist:
                    found[(s, t)] = plist
                    if mirror:
                        found[(t, s)] = [p[::-1] for p in plist]
    finally:
        if pool is not None:
            pool.shutdown()
        _WORKER.clear()
    ps = PathSet.from_node_paths(topo, found, strategy=strategy, k=k)
    if cache_file is not None:
        ps.save(cache_file)
    return ps


def _mirrorable(topo: Topology, metric: Metric) -> bool:
    """True when the reverse of a shortest s->t path is a shortest t->s path for this metric."""
    li = topo.link_index
    metric_values = {"hop": np.ones(topo.num_links), "weight": topo.weight,
                     "latency": topo.latency_seconds}[metric]
    for i, (u, v) in enumerate(zip(topo.src.tolist(), topo.dst.tolist())):
        j = li.get((v, u))
        if j is None or metric_values[j] != metric_values[i]:
            return False
    return True


def _with_progress(it, total: int, label: str, enabled: bool):
    if not enabled:
        yield from it
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for x in it:
            yield x
            bar.advance(task)
