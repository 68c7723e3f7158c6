"""The min-MLU linear program over candidate paths, solved with HiGHS (highspy).

    minimise   U
    subject to sum_{p in P(i)} x_p = 1                         for each pair i with demand > 0
               sum_p d_{i(p)} A[p, l] x_p / c_l - U <= 0       for each link l
               x >= 0

Demands are divided by the largest demand and capacities by the largest capacity before solving,
which keeps coefficients near 1 (HiGHS tolerances are absolute). The returned MLU is checked
against the loads recomputed from the returned split, independently of the solver's objective.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from .evaluate import link_loads, mlu
from .pathset import PathSet
from .topology import Topology


_BANNER_SHOWN = False


def new_highs() -> highspy.Highs:
    """A silent HiGHS instance. Its first construction prints a banner straight to fd 1, which
    would corrupt JSON on stdout, so that one construction runs with fd 1 pointed at /dev/null."""
    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        h = highspy.Highs()
    else:
        import os
        import sys

        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _BANNER_SHOWN = True
    h.setOptionValue("output_flag", False)
    return h


class LPError(RuntimeError):
    """HiGHS did not reach an optimum, or its answer failed the independent check."""

def highs_model(cost: np.ndarray, col_lower: np.ndarray, col_upper: np.ndarray, row_lower: np.ndarray,
                row_upper: np.ndarray, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray,
                solver: str = "choose", time_limit_seconds: float | None = None,
                threads: int | None = None) -> highspy.Highs:
    """A silent HiGHS instance holding the LP  min cost.x  s.t.  row_lower <= A x <= row_upper,
    col_lower <= x <= col_upper, with A given column-wise (CSC arrays). Every tecore LP goes
    through here, so solver options are set in one place."""
    lp = highspy.HighsLp()
    lp.num_col_ = int(cost.shape[0])
    lp.num_row_ = int(row_lower.shape[0])
    lp.col_cost_ = cost
    lp.col_lower_ = col_lower
    lp.col_upper_ = col_upper
    lp.row_lower_ = row_lower
    lp.row_upper_ = row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.asarray(indptr).astype(np.int32)
    lp.a_matrix_.index_ = np.asarray(indices).astype(np.int32)
    lp.a_matrix_.value_ = values
    h = new_highs()
    h.setOptionValue("solver", solver)
    if threads:
        h.setOptionValue("threads", int(threads))
    if time_limit_seconds:
        h.setOptionValue("time_limit", float(time_limit_seconds))
    h.passModel(lp)
    return h


def run_to_optimum(h: highspy.Highs) -> float:
    """Run HiGHS; return the solve time in seconds, or raise LPError unless it reached an optimum."""
    t1 = time.perf_counter()
    h.run()
    seconds = time.perf_counter() - t1
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        status = h.modelStatusToString(h.getModelStatus())
        raise LPError(f"HiGHS stopped with status {status!r} after {seconds:.1f} s")
    return seconds


def check_pair_demand(paths: PathSet, pair_demand_bps) -> np.ndarray:
    """float64 [P] pair demands, or ValueError naming what is wrong."""
    demand = np.asarray(pair_demand_bps, dtype=np.float64)
    if demand.shape != (paths.num_pairs,):
        raise ValueError(f"pair demand has shape {demand.shape}, expected ({paths.num_pairs},)")
    if not np.all(np.isfinite(demand)) or np.any(demand < 0):
        raise ValueError("pair demands must be finite and >= 0")
    return demand


@dataclass(frozen=True)
class PathLP:
    """The min-U path LP (module docstring) over the paths of pairs with demand, built in HiGHS.

    Columns are those paths (``cols`` index the PathSet) plus U; demands are divided by ``dmax`` and
    capacities by ``cmax``, so the true utilisation is ``U * dmax / cmax``.
    """

    highs: highspy.Highs
    cols: np.ndarray  # path index of each x column
    col_pair_row: np.ndarray  # row (active pair) of each x column
    num_active_pairs: int
    num_rows: int
    dmax: float
    cmax: float

    def split(self, paths: PathSet) -> np.ndarray:
        """The solved split ratios, renormalised per pair; pairs without demand use their first path."""
        split = np.zeros(paths.num_paths)
        split[paths.pair_ptr[:-1]] = 1.0
        xs = np.clip(np.asarray(self.highs.getSolution().col_value)[:self.cols.size], 0.0, None)
        xs /= np.bincount(self.col_pair_row, weights=xs, minlength=self.num_active_pairs)[self.col_pair_row]
        split[self.cols] = xs
        return split


def pair_link_index(pair_of_path: np.ndarray, inc_path: np.ndarray, inc_link: np.ndarray,
                    num_links: int) -> tuple[np.ndarray, np.ndarray]:
    """Group path-link incidence entries by (pair, link): returns (group id of each entry [nnz],
    link of each group [G]). A pair's paths may share links (first and last hops often do); its
    traffic on a link is the sum over its paths through that link, one group."""
    key = pair_of_path[inc_path].astype(np.int64) * num_links + inc_link
    uniq, group = np.unique(key, return_inverse=True)
    return group.reshape(-1), (uniq % num_links).astype(np.int64)


def build_path_lp(topo: Topology, paths: PathSet, demand: np.ndarray, path_cost: np.ndarray | None = None,
                  surge_fraction: float = 0.0, solver: str = "choose", time_limit_seconds: float | None = None,
                  threads: int | None = None) -> PathLP:
    """min U + sum_p path_cost[p] x_p  s.t. each active pair's split sums to 1 and every used link's
    normalised load, plus ``surge_fraction`` times its largest single-pair load, is <= U.
    ``demand`` must have a positive entry.

    The surge term (burst headroom, see tecore.objectives) adds one column m_l per used link and one
    row per (pair, link): pair load on l <= m_l; the link row becomes load_l + h m_l <= U."""
    dmax, cmax = float(demand.max()), float(topo.capacity_bps.max())
    active = np.flatnonzero(demand > 0)
    counts = paths.paths_per_pair[active]
    starts = paths.pair_ptr[active]
    cols = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    n_x = cols.size
    col_pair_row = np.repeat(np.arange(active.size), counts)
    inc = paths.incidence[cols]  # [n_x, L]
    used = np.flatnonzero(np.asarray(inc.sum(axis=0)).ravel() > 0)
    c_norm = topo.capacity_bps[used] / cmax
    # Link rows: diag(1/c) A^T diag(d), restricted to links some active path uses.
    col_demand = demand[paths.path_pair[cols]] / dmax
    link_block = (sp.diags(1.0 / c_norm) @ inc[:, used].T @ sp.diags(col_demand)).tocsr()
    pair_block = sp.csr_matrix((np.ones(n_x), (col_pair_row, np.arange(n_x))), shape=(active.size, n_x))
    n_links = used.size
    if surge_fraction > 0:
        inc_used = inc[:, used].tocoo()
        group, group_link = pair_link_index(col_pair_row, inc_used.row, inc_used.col, n_links)
        n_g = group_link.size
        # Rows: sum_{p of pair i through l} d_i x_p / c_l - m_l <= 0.
        x_rows = sp.csr_matrix((col_demand[inc_used.row] / c_norm[inc_used.col], (group, inc_used.row)),
                               shape=(n_g, n_x))
        m_rows = sp.csr_matrix((-np.ones(n_g), (np.arange(n_g), group_link)), shape=(n_g, n_links))
        m_links = sp.diags(np.full(n_links, surge_fraction)).tocsr()
        A_x = sp.vstack([pair_block, link_block, x_rows])
        A_m = sp.vstack([sp.csr_matrix((active.size, n_links)), m_links, m_rows])
        extra_rows = n_g
    else:
        A_x = sp.vstack([pair_block, link_block])
        A_m = sp.csr_matrix((active.size + n_links, 0))
        extra_rows = 0
    n_m = A_m.shape[1]
    n_rows = active.size + n_links + extra_rows
    u_col = sp.csr_matrix((-np.ones(n_links), (np.arange(active.size, active.size + n_links),
                                               np.zeros(n_links, dtype=np.int64))), shape=(n_rows, 1))
    A = sp.hstack([A_x, A_m, u_col]).tocsc()
    cost = np.zeros(n_x) if path_cost is None else np.asarray(path_cost, dtype=np.float64)[cols]
    h = highs_model(np.concatenate([cost, np.zeros(n_m), [1.0]]), np.zeros(n_x + n_m + 1),
                    np.concatenate([np.ones(n_x), np.full(n_m + 1, highspy.kHighsInf)]),
                    np.concatenate([np.ones(active.size), np.full(n_links + extra_rows, -highspy.kHighsInf)]),
                    np.concatenate([np.ones(active.size), np.zeros(n_links + extra_rows)]),
                    A.indptr, A.indices, A.data, solver=solver, time_limit_seconds=time_limit_seconds,
                    threads=threads)
    return PathLP(h, cols, col_pair_row, int(active.size), n_rows, dmax, cmax)


@dataclass(frozen=True)
class LPResult:
    mlu: float  # recomputed from split (the independent check), not the solver's objective
    split: np.ndarray  # float64 [Np], >= 0, sums to 1 per pair
    link_loads_bps: np.ndarray  # float64 [L]
    solve_seconds: float  # HiGHS run only
    build_seconds: float  # building the sparse model
    objective_mlu: float  # the solver's U, rescaled
    status: str
    num_variables: int
    num_constraints: int


def solve_min_mlu(topo: Topology, paths: PathSet, pair_demand_bps: np.ndarray, solver: str = "choose",
                  time_limit_seconds: float | None = None, threads: int | None = None,
                  rel_check_tol: float = 1e-5) -> LPResult:
    """Optimal split ratios for the min-MLU LP over ``paths``."""
    t0 = time.perf_counter()
    demand = check_pair_demand(paths, pair_demand_bps)
    if not demand.any():
        split = np.zeros(paths.num_paths)
        split[paths.pair_ptr[:-1]] = 1.0  # pairs without demand: their first (shortest) path
        return LPResult(0.0, split, np.zeros(topo.num_links), 0.0, time.perf_counter() - t0, 0.0,
                        "no demand", 0, 0)
    plp = build_path_lp(topo, paths, demand, solver=solver, time_limit_seconds=time_limit_seconds, threads=threads)
    build = time.perf_counter() - t0
    solve = run_to_optimum(plp.highs)
    status = plp.highs.modelStatusToString(plp.highs.getModelStatus())
    u_solver = float(plp.highs.getSolution().col_value[-1]) * plp.dmax / plp.cmax
    split = plp.split(paths)
    loads = link_loads(paths, split, demand)
    mlu_check = mlu(topo, loads)
    if abs(mlu_check - u_solver) > rel_check_tol * max(mlu_check, u_solver) + 1e-12:
        raise LPError(f"LP check failed: solver MLU {u_solver:.9g}, recomputed {mlu_check:.9g}")
    return LPResult(mlu_check, split, loads, solve, build, u_solver, status, plp.cols.size + 1, plp.num_rows)
