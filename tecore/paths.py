"""Candidate paths per ordered node pair, held as a sparse path-link incidence.

A PathSet is the action space of every router: split ratios are one number per path, link loads are
``incidence.T @ (split * demand_of_path)`` (one sparse mat-vec), and MLU is their max over capacity.
Paths are computed once per (topology hash, strategy, k, metric) and cached on disk.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

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
# A per-pair strategy yields candidate node lists for (graph, src, dst, k, weight attribute or None)
# in preference order; compute_paths keeps the first k distinct ones that pass the stretch bound.
Strategy = Callable[[nx.DiGraph, int, int, int, "str | None"], Iterator[list[int]]]


def _k_shortest(g: nx.DiGraph, s: int, t: int, k: int, weight: str | None) -> Iterator[list[int]]:
    """Yen's loop-free paths (networkx) in order of increasing cost, generated lazily."""
    try:
        yield from nx.shortest_simple_paths(g, s, t, weight=weight)
    except nx.NetworkXNoPath:
        return


def _capacity_shortest(g: nx.DiGraph, s: int, t: int, k: int, weight: str | None) -> Iterator[list[int]]:
    """Yen's paths under inverse-capacity weights (OSPF's reference-bandwidth rule): fat links first."""
    yield from _k_shortest(g, s, t, k, "invcap")


def _edge_disjoint_first(g: nx.DiGraph, s: int, t: int, k: int, weight: str | None) -> Iterator[list[int]]:
    """Greedy edge-disjoint shortest paths first (diversity), then Yen's shortest paths."""
    # A view hiding the used edges instead of a copy per pair (copying Kdl's graph for each of its
    # 284k pairs took minutes). The view is over one shared copy because a copy's predecessor order,
    # and so BFS's choice among equally short paths, differs from the original graph's: this keeps
    # the paths identical to the copy-per-pair version.
    base = g.graph.get("_disjoint_base")
    if base is None:
        base = g.copy()
        g.graph["_disjoint_base"] = base
    removed: list[tuple[int, int]] = []
    for _ in range(k):
        h = nx.restricted_view(base, (), removed) if removed else base
        try:
            p = nx.shortest_path(h, s, t, weight=weight)
        except nx.NetworkXNoPath:
            break
        yield p
        removed.extend(zip(p[:-1], p[1:]))
    yield from _k_shortest(g, s, t, k, weight)


def _optimum_seeded_marker(g, s, t, k, weight):  # pragma: no cover - dispatched in compute_paths
    raise PathError("optimum-seeded paths are built for the whole topology by compute_paths")


STRATEGIES: dict[str, Strategy] = {
    "shortest": _k_shortest,
    "capacity": _capacity_shortest,
    "edge-disjoint": _edge_disjoint_first,
    # Whole-topology strategy: paths that carry flow in exact min-MLU solutions of sample TMs.
    "optimum-seeded": _optimum_seeded_marker,
}
#: Per-pair strategy used to top optimum-seeded pairs up to k (diverse shortest paths).
SEED_TOPUP_STRATEGY = "edge-disjoint"
#: TM families the optimum-seeded strategy samples, and how many of each.
SEED_FAMILIES = ("gravity", "hotspot", "bimodal")
SEED_TMS_PER_FAMILY = 2
#: Offset between ``seed`` and the TM generator seed used for seeding, so that evaluation TMs drawn
#: with small seeds (0, 1, 2, ...) are never the ones the path set was built from.
SEED_TM_OFFSET = 104729
#: Largest seeding LP (sources x links columns) optimum-seeded solves. Cogentco is 96k columns and
#: solves in seconds; Kdl is 1.36M columns and did not finish in 15 min on the shared 2-core machine,
#: so above this the strategy falls back to its top-up strategy alone, says so in a warning, and
#: labels the PathSet with that strategy.
SEED_MAX_LP_COLUMNS = 400_000

DEFAULT_STRATEGY = "optimum-seeded"
DEFAULT_K = 4
DEFAULT_MAX_STRETCH: float | None = None

# Worker state, inherited through fork so that each task carries only node ids.
_WORKER: dict = {}


def _work(task: tuple[int, list[int]]) -> list[tuple[int, int, list[list[int]]]]:
    s, targets = task
    w = _WORKER
    return [(s, t, _pick(w["fn"](w["g"], s, t, w["k"], w["weight"]), s, t)) for t in targets]


def _pick(candidates: Iterable[list[int]], s: int, t: int) -> list[list[int]]:
    """The first k distinct candidates within the stretch bound (examining at most 4k + 8)."""
    w = _WORKER
    k, bound, lm, dist, monotone = w["k"], w["bound"], w["link_metric"], w["dist"], w["monotone"]
    limit = bound * dist[s, t] * (1 + 1e-9) + 1e-12 if bound is not None else np.inf
    out: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for examined, p in enumerate(candidates):
        if len(out) == k or examined >= 4 * k + 8:
            break
        key = tuple(p)
        if key in seen:
            continue
        seen.add(key)
        if bound is not None and lm[p[:-1], p[1:]].sum() > limit:
            if monotone:
                break  # candidates come in order of this very cost: none later can pass
            continue
        out.append(p)
    return out


def _metric_graph(topo: Topology, metric: Metric) -> tuple[nx.DiGraph, str | None]:
    g = nx.DiGraph()
    g.add_nodes_from(range(topo.num_nodes))
    invcap = (float(topo.capacity_bps.max()) / topo.capacity_bps).tolist()
    edges = list(zip(topo.src.tolist(), topo.dst.tolist()))
    if metric == "hop" or (metric == "weight" and np.all(topo.weight == 1.0)):
        # unit weights: BFS is exact and several times faster than Dijkstra
        g.add_edges_from((u, v, {"invcap": c}) for (u, v), c in zip(edges, invcap))
        return g, None
    w = topo.weight if metric == "weight" else topo.latency_seconds
    g.add_edges_from((u, v, {"weight": x, "invcap": c}) for (u, v), x, c in zip(edges, w.tolist(), invcap))
    return g, "weight"


def _stretch_metric_values(topo: Topology, stretch_metric: str) -> np.ndarray:
    if stretch_metric == "hop":
        return np.ones(topo.num_links)
    if stretch_metric == "latency":
        return topo.latency_seconds
    raise PathError(f"stretch metric must be 'hop' or 'latency', not {stretch_metric!r}")


def shortest_distances(topo: Topology, stretch_metric: str = "hop") -> np.ndarray:
    """All-pairs shortest distance [N, N] in hops or seconds of latency (inf where unreachable)."""
    from scipy.sparse.csgraph import shortest_path

    m = _stretch_metric_values(topo, stretch_metric)
    g = sp.csr_matrix((m, (topo.src, topo.dst)), shape=(topo.num_nodes, topo.num_nodes))
    return shortest_path(g, method="D", directed=True, unweighted=stretch_metric == "hop")


def path_stretch(topo: Topology, paths: PathSet, stretch_metric: str = "hop") -> np.ndarray:
    """Each path's cost over its pair's shortest-path cost (1.0 = a shortest path): float64 [Np]."""
    cost = paths.path_cost(_stretch_metric_values(topo, stretch_metric))
    best = shortest_distances(topo, stretch_metric)[paths.pairs[:, 0], paths.pairs[:, 1]]
    return cost / best[paths.path_pair]


def cache_dir() -> Path:
    return Path(os.environ.get("TELLM_CACHE_DIR") or Path.home() / ".cache" / "tellm") / "paths"


def compute_paths(topo: Topology, k: int = DEFAULT_K, strategy: str = DEFAULT_STRATEGY,
                  metric: Metric = "weight", workers: int | None = None, use_cache: bool = True,
                  progress: bool = False, pairs: Iterable[tuple[int, int]] | None = None,
                  max_stretch: float | None = DEFAULT_MAX_STRETCH, stretch_metric: str = "hop",
                  seed: int = 0) -> PathSet:
    """Up to k loop-free paths for every ordered pair (or the given pairs).

    ``strategy``: "shortest" (Yen, the usual baseline), "capacity" (Yen on inverse-capacity weights),
    "edge-disjoint" (greedy edge-disjoint shortest paths first), or "optimum-seeded" (paths carrying
    flow in exact min-MLU solutions of sample TMs drawn with ``seed``, topped up with edge-disjoint-
    first paths). ``max_stretch`` bounds every path's cost at that multiple of the pair's shortest
    path in ``stretch_metric`` ("hop" or "latency"); pairs keep fewer than k paths when fewer fit.

    With a symmetric topology only src < dst is searched and the reverse paths are mirrored, which
    halves the work. ``workers`` processes (default: all cores) share the sources.
    """
    if strategy not in STRATEGIES:
        raise PathError(f"unknown path strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if not 1 <= k <= 64:
        raise PathError(f"k must be between 1 and 64, got {k}")
    if max_stretch is not None and not (max_stretch >= 1.0 and np.isfinite(max_stretch)):
        raise PathError(f"max_stretch must be a number >= 1 (or None), got {max_stretch}")
    _stretch_metric_values(topo, stretch_metric)  # validates the name
    cache_file = None
    if use_cache and pairs is None:
        extra = "" if max_stretch is None else f"-x{max_stretch:g}{stretch_metric}"
        if strategy == "optimum-seeded":
            extra += f"-seed{seed}"
        cache_file = cache_dir() / f"{topo.name}-{topo.content_hash}-{strategy}-{metric}-k{k}{extra}.npz"
        if cache_file.exists():
            try:
                return PathSet.load(cache_file)
            except Exception:  # noqa: BLE001 - a bad cache file is recomputed, never fatal
                cache_file.unlink(missing_ok=True)
    if strategy == "optimum-seeded" and topo.num_nodes * topo.num_links > SEED_MAX_LP_COLUMNS:
        import warnings

        warnings.warn(f"{topo.name}: the optimum-seeding LP would have {topo.num_nodes * topo.num_links} "
                      f"columns (limit {SEED_MAX_LP_COLUMNS}); using {SEED_TOPUP_STRATEGY} paths only",
                      stacklevel=2)
        strategy = SEED_TOPUP_STRATEGY
    if strategy == "optimum-seeded":
        found = _optimum_seeded(topo, k, metric, workers, progress, max_stretch, stretch_metric, seed, pairs)
    else:
        found = _search(topo, k, strategy, metric, workers, progress, pairs, max_stretch, stretch_metric)
    ps = PathSet.from_node_paths(topo, found, strategy=strategy, k=k)
    if cache_file is not None:
        ps.save(cache_file)
    return ps


def _search(topo: Topology, k: int, strategy: str, metric: Metric, workers: int | None, progress: bool,
            pairs, max_stretch: float | None, stretch_metric: str) -> dict[tuple[int, int], list[list[int]]]:
    g, weight = _metric_graph(topo, metric)
    mirror = _mirrorable(topo, metric) and (strategy != "capacity" or _mirrorable_values(topo, topo.capacity_bps))
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
    lm = np.zeros((topo.num_nodes, topo.num_nodes))
    lm[topo.src, topo.dst] = _stretch_metric_values(topo, stretch_metric)
    search_is_stretch_metric = (strategy == "shortest" and (
        (stretch_metric == "hop" and (metric == "hop" or np.all(topo.weight == 1.0) and metric == "weight"))
        or (stretch_metric == "latency" and metric == "latency")))
    _WORKER.update(g=g, fn=STRATEGIES[strategy], k=k, weight=weight, bound=max_stretch, link_metric=lm,
                   dist=shortest_distances(topo, stretch_metric) if max_stretch is not None else None,
                   monotone=search_is_stretch_metric)
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
        results = _with_progress(results, len(tasks), f"paths {topo.name} {strategy} k={k}", progress)
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
    return found


def _optimum_seeded(topo: Topology, k: int, metric: Metric, workers: int | None, progress: bool,
                    max_stretch: float | None, stretch_metric: str,
                    seed: int, pairs=None) -> dict[tuple[int, int], list[list[int]]]:
    """Per pair: its shortest path, then the paths that carry its flow in exact min-MLU solutions of
    sample TMs (most carried share first), then diverse shortest paths, up to k within the stretch bound.

    The optimum solves run a second, "shorten" pass (same MLU within 1e-4, least total hop x flow) so
    the paths are short and free of circulations; decomposition is deterministic, and so is HiGHS'
    serial simplex, so a fixed ``seed`` gives a fixed path set.
    """
    from .optimum import decompose_flows, solve_optimum
    from .traffic import generate

    base = _search(topo, k, SEED_TOPUP_STRATEGY, metric, workers, progress, pairs, max_stretch, stretch_metric)
    share: dict[tuple[int, int], dict[tuple[int, ...], float]] = {}
    tms = [tm for fam in SEED_FAMILIES
           for tm in generate(topo, fam, SEED_TMS_PER_FAMILY, seed=SEED_TM_OFFSET + seed)]
    for tm in _with_progress(iter(tms), len(tms), f"optimum {topo.name}", progress):
        res = solve_optimum(topo, tm, solver="simplex", shorten="hop")
        d = tm.demand_bps
        for (s, t), flows in decompose_flows(topo, tm, res).items():
            acc = share.setdefault((s, t), {})
            for nodes, bps in flows:
                acc[tuple(nodes)] = acc.get(tuple(nodes), 0.0) + bps / d[s, t]
    lm = np.zeros((topo.num_nodes, topo.num_nodes))
    lm[topo.src, topo.dst] = _stretch_metric_values(topo, stretch_metric)
    dist = shortest_distances(topo, stretch_metric) if max_stretch is not None else None
    found: dict[tuple[int, int], list[list[int]]] = {}
    for (s, t), plist in base.items():
        seeded = sorted(share.get((s, t), {}).items(), key=lambda kv: (-round(kv[1], 9), len(kv[0]), kv[0]))
        if dist is not None:
            limit = max_stretch * dist[s, t] * (1 + 1e-9) + 1e-12
            seeded = [kv for kv in seeded if lm[list(kv[0][:-1]), list(kv[0][1:])].sum() <= limit]
        out, seen = [], set()
        for p in [plist[0]] + [list(nodes) for nodes, _ in seeded] + plist[1:]:
            if tuple(p) not in seen:
                seen.add(tuple(p))
                out.append(p)
            if len(out) == k:
                break
        found[(s, t)] = out
    return found


def _mirrorable(topo: Topology, metric: Metric) -> bool:
    """True when the reverse of a shortest s->t path is a shortest t->s path for this metric."""
    metric_values = {"hop": np.ones(topo.num_links), "weight": topo.weight,
                     "latency": topo.latency_seconds}[metric]
    return _mirrorable_values(topo, metric_values)


def _mirrorable_values(topo: Topology, values: np.ndarray) -> bool:
    """True when every link has a reverse link with the same value."""
    li = topo.link_index
    for i, (u, v) in enumerate(zip(topo.src.tolist(), topo.dst.tolist())):
        j = li.get((v, u))
        if j is None or values[j] != values[i]:
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
