"""Link loads and MLU for split ratios, and the ECMP baseline.

Two ECMP notions live here on purpose:
- ``ecmp_link_loads``: what OSPF-style hop-by-hop ECMP does (each router splits traffic to a
  destination equally over its next hops on shortest paths). This is the baseline ``mlu_ecmp`` in
  every report, independent of the candidate path set.
- ``shortest_path_split``: equal split over each pair's *candidate* paths of least cost, a split
  ratio vector the controller can install (its fallback when the model is unavailable).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path
from scipy.sparse.linalg import splu

from .pathset import PathSet
from .topology import Topology
from .traffic import TrafficMatrix

_COST_EPS = 1e-9


def check_split(paths: PathSet, split: np.ndarray, atol: float = 1e-6) -> None:
    """Raise ValueError unless ``split`` is a valid split-ratio vector (>= 0, sum 1 per pair)."""
    split = np.asarray(split)
    if split.shape != (paths.num_paths,):
        raise ValueError(f"split has shape {split.shape}, expected ({paths.num_paths},)")
    if not np.all(np.isfinite(split)):
        raise ValueError("split contains NaN or inf")
    if np.any(split < -atol):
        raise ValueError("split contains negative ratios")
    sums = np.add.reduceat(split, paths.pair_ptr[:-1])
    bad = np.flatnonzero(np.abs(sums - 1.0) > atol)
    if bad.size:
        raise ValueError(f"{bad.size} pair(s) have split ratios that do not sum to 1 (e.g. pair {bad[0]}: {sums[bad[0]]})")


def link_loads(paths: PathSet, split: np.ndarray, pair_demand_bps: np.ndarray) -> np.ndarray:
    """Load on each link in bit/s: incidence.T @ (split * demand of the path's pair)."""
    flow = np.asarray(split, dtype=np.float64) * np.asarray(pair_demand_bps, dtype=np.float64)[paths.path_pair]
    return paths.incidence.T @ flow


def utilisation(topo: Topology, loads_bps: np.ndarray) -> np.ndarray:
    return np.asarray(loads_bps) / topo.capacity_bps


def mlu(topo: Topology, loads_bps: np.ndarray) -> float:
    """Maximum link utilisation (load / capacity); 0 for an idle network."""
    return float(np.max(utilisation(topo, loads_bps), initial=0.0))


def split_mlu(topo: Topology, paths: PathSet, split: np.ndarray, pair_demand_bps: np.ndarray) -> float:
    return mlu(topo, link_loads(paths, split, pair_demand_bps))


def shortest_path_split(topo: Topology, paths: PathSet, metric: np.ndarray | None = None) -> np.ndarray:
    """Equal split over each pair's least-cost candidate paths (cost = sum of ``metric``, default weight)."""
    cost = paths.path_cost(topo.weight if metric is None else metric)
    best = np.minimum.reduceat(cost, paths.pair_ptr[:-1])[paths.path_pair]
    on = (cost <= best * (1 + _COST_EPS) + _COST_EPS).astype(np.float64)
    return on / np.add.reduceat(on, paths.pair_ptr[:-1])[paths.path_pair]


def uniform_split(paths: PathSet) -> np.ndarray:
    """Equal split over all of each pair's candidate paths."""
    return 1.0 / paths.paths_per_pair[paths.path_pair].astype(np.float64)


def all_pairs_distance(topo: Topology, metric: np.ndarray | None = None) -> np.ndarray:
    w = topo.weight if metric is None else np.asarray(metric, dtype=np.float64)
    g = sp.csr_matrix((w, (topo.src, topo.dst)), shape=(topo.num_nodes, topo.num_nodes))
    return shortest_path(g, method="D", directed=True)


def ecmp_link_loads(topo: Topology, tm: TrafficMatrix, metric: np.ndarray | None = None) -> np.ndarray:
    """Hop-by-hop ECMP link loads in bit/s.

    For each destination t the shortest-path DAG splits a node's traffic equally over its DAG
    out-links; node throughput x solves x = d_t + P_t^T x, one sparse LU per destination.
    """
    n, L = topo.num_nodes, topo.num_links
    w = topo.weight if metric is None else np.asarray(metric, dtype=np.float64)
    dist = all_pairs_distance(topo, w)
    demand = tm.demand_bps
    if demand.shape != (n, n):
        raise ValueError(f"traffic matrix is {demand.shape}, topology has {n} nodes")
    loads = np.zeros(L)
    eye = sp.identity(n, format="csc")
    for t in np.flatnonzero(demand.sum(axis=0) > 0):
        du, dv = dist[topo.src, t], dist[topo.dst, t]
        with np.errstate(invalid="ignore"):  # inf - inf where t is unreachable: not on the DAG
            on_dag = np.isfinite(du) & (np.abs(du - (w + dv)) <= _COST_EPS * np.maximum(1.0, du))
        out_deg = np.bincount(topo.src[on_dag], minlength=n).astype(np.float64)
        share = np.where(on_dag, 1.0 / np.maximum(out_deg[topo.src], 1.0), 0.0)
        P = sp.csc_matrix((share, (topo.src, topo.dst)), shape=(n, n))
        d_t = demand[:, t].copy()
        d_t[~np.isfinite(dist[:, t])] = 0.0  # unreachable sources carry nothing
        x = splu((eye - P.T).tocsc()).solve(d_t)
        loads += x[topo.src] * share
    return loads


def ecmp_mlu(topo: Topology, tm: TrafficMatrix) -> float:
    return mlu(topo, ecmp_link_loads(topo, tm))


def scale_to_mlu(topo: Topology, tm: TrafficMatrix, target_mlu: float) -> TrafficMatrix:
    """Scale a TM so that hop-by-hop ECMP routing reaches ``target_mlu`` (MLU is linear in scale)."""
    base = ecmp_mlu(topo, tm)
    if base <= 0:
        return tm
    return tm.scaled(target_mlu / base)
