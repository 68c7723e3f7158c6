"""The exact min-MLU optimum over *all* paths: a source-aggregated multicommodity-flow LP (HiGHS).

    minimise   U
    subject to sum_{l out of v} f[s,l] - sum_{l into v} f[s,l] = b_s(v)   for each source s, node v
               sum_s f[s,l] - c_l U <= 0                                    for each link l
               f >= 0

with b_s(s) = sum_t d[s,t] and b_s(t) = -d[s,t]. Min-MLU only cares about link loads, so all the
commodities of one source can share one flow (any single-source flow decomposes into s->t paths
carrying exactly d[s,t] each); that makes the LP |S| x |L| columns instead of |pairs| x |L|.

Path-LP / this optimum is how much a candidate path set costs: 1.0 means the path set loses nothing.
The flows can be decomposed into paths (``decompose_flows``): that is what the optimum-seeded path
strategy is built from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

from .lp import LPError, highs_model, run_to_optimum
from .topology import Topology

# HiGHS "solver" option: "simplex" (default: fastest measured, 3 s on Cogentco vs 13 s for "ipm"),
# "choose", "ipm", "pdlp". Thread count is HiGHS' global setting (changing it per solve fails).
OptimumSolver = str


@dataclass(frozen=True)
class OptimumResult:
    mlu: float  # max over links of load / capacity, recomputed from the returned flows
    link_loads_bps: np.ndarray  # float64 [L]
    solve_seconds: float  # HiGHS run(s) only
    build_seconds: float  # building the sparse model
    objective_mlu: float  # the solver's U, rescaled
    status: str
    num_variables: int
    num_constraints: int
    sources: np.ndarray  # int64 [S]: node index of each flow row
    flows_bps: np.ndarray  # float64 [S, L]: flow of source sources[i] on each link
    conservation_error_bps: float  # largest violation of flow conservation in the returned flows


def demand_matrix(topo: Topology, demand_bps: np.ndarray) -> np.ndarray:
    """A float64 [N, N] copy of ``demand_bps`` (array or TrafficMatrix), zero diagonal; ValueError
    when its shape or values are wrong."""
    d = np.array(getattr(demand_bps, "demand_bps", demand_bps), dtype=np.float64)
    n = topo.num_nodes
    if d.shape != (n, n):
        raise ValueError(f"demand matrix has shape {d.shape}, topology has {n} nodes")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError("demands must be finite and >= 0")
    np.fill_diagonal(d, 0.0)
    return d


def source_rhs(d: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """[S, N] right-hand side of the conservation rows: each source's total out, minus each demand in."""
    b = -d[sources]
    b[np.arange(sources.size), sources] = d[sources].sum(axis=1)
    return b


def source_flow_model(topo: Topology, sources: np.ndarray, b: np.ndarray, solver: OptimumSolver = "simplex",
                      time_limit_seconds: float | None = None) -> highspy.Highs:
    """The min-U LP of the module docstring in HiGHS, with demands already divided by their largest.

    Column (i, l) = flow of source i on link l, index i * L + l; U is the last column. Row (i, v) =
    conservation of source i at node v, index i * N + v; row S * N + l = load of link l minus U.
    Each flow column has three entries: +1 in row (i, src l), -1 in row (i, dst l), 1/c_l in link row l
    (capacities divided by their largest).
    """
    n, L, S = topo.num_nodes, topo.num_links, sources.size
    c_norm = topo.capacity_bps / float(topo.capacity_bps.max())
    ii = np.repeat(np.arange(S), L)
    ll = np.tile(np.arange(L), S)
    rows = np.stack([ii * n + topo.src[ll], ii * n + topo.dst[ll], S * n + ll], axis=1).ravel()
    vals = np.stack([np.ones(S * L), -np.ones(S * L), 1.0 / c_norm[ll]], axis=1).ravel()
    indptr = np.arange(0, 3 * S * L + 1, 3)
    # U column: -1 in every link row.
    rows = np.concatenate([rows, S * n + np.arange(L)])
    vals = np.concatenate([vals, -np.ones(L)])
    indptr = np.concatenate([indptr, [indptr[-1] + L]])
    n_cols = S * L + 1
    upper = np.full(n_cols, highspy.kHighsInf)
    # Flow of source s into s is never useful; fixing it at 0 lets presolve drop those columns.
    upper[:-1][topo.dst[ll] == sources[ii]] = 0.0
    return highs_model(np.concatenate([np.zeros(S * L), [1.0]]), np.zeros(n_cols), upper,
                       np.concatenate([b.ravel(), np.full(L, -highspy.kHighsInf)]),
                       np.concatenate([b.ravel(), np.zeros(L)]), indptr, rows, vals, solver=solver,
                       time_limit_seconds=time_limit_seconds)


#: HiGHS ``simplex_strategy`` of primal simplex: used from a primal feasible starting basis (the
#: fewest-hop routing, or the min-MLU optimum for the shorten pass).
_PRIMAL_SIMPLEX = 4


def tree_start_basis(topo: Topology, sources: np.ndarray, b: np.ndarray) -> highspy.HighsBasis:
    """A primal feasible basis of ``source_flow_model(topo, sources, b)``: each source's flow on its
    fewest-hop tree, U at the resulting MLU.

    Basic: per source, the tree link into every node it reaches and the conservation slack of every
    other node (itself, the unreached); U, and every link row's slack but the most loaded link's
    (at its upper bound 0). That is block triangular, so nonsingular. Primal simplex from here takes a
    few thousand iterations on a 200-node WAN where dual simplex from the slack basis takes ~50,000.
    """
    n, L, S = topo.num_nodes, topo.num_links, sources.size
    g = sp.csr_matrix((np.ones(L), (topo.src, topo.dst)), shape=(n, n))
    _, pred = shortest_path(g, unweighted=True, indices=sources, return_predecessors=True)
    link_of = np.full((n, n), -1, dtype=np.int64)
    link_of[topo.src, topo.dst] = np.arange(L)
    rows, v = np.nonzero(pred >= 0)  # (source row, node it reaches through a tree link)
    # Link loads of the tree routing: every demand climbs its tree path to the source.
    load = np.zeros(L)
    cur, at, amount = v, rows, -b[rows, v]
    while cur.size:
        up = pred[at, cur]
        load += np.bincount(link_of[up, cur], weights=amount, minlength=L)
        more = up != sources[at]
        cur, at, amount = up[more], at[more], amount[more]
    c_norm = topo.capacity_bps / float(topo.capacity_bps.max())
    col_basic = np.zeros(S * L + 1, dtype=bool)
    col_basic[rows * L + link_of[pred[rows, v], v]] = True
    col_basic[-1] = True
    row_basic = np.ones(S * n + L, dtype=bool)
    row_basic[rows * n + v] = False
    top = S * n + int(np.argmax(load / c_norm))
    row_basic[top] = False
    basic, lower = highspy.HighsBasisStatus.kBasic, highspy.HighsBasisStatus.kLower
    basis = highspy.HighsBasis()
    basis.col_status = [basic if x else lower for x in col_basic.tolist()]
    row_status = [basic if x else lower for x in row_basic.tolist()]
    row_status[top] = highspy.HighsBasisStatus.kUpper
    basis.row_status = row_status
    basis.valid = True
    return basis


def check_conservation(topo: Topology, d: np.ndarray, sources: np.ndarray, flows_bps: np.ndarray) -> float:
    """Largest violation of flow conservation of per-source ``flows_bps`` [S, L] for demands ``d``;
    raises ``LPError`` above 1e-5 of the largest source total."""
    net = np.zeros((sources.size, topo.num_nodes))
    np.add.at(net, (slice(None), topo.src), flows_bps)
    np.subtract.at(net, (slice(None), topo.dst), flows_bps)
    cons_err = float(np.max(np.abs(net - source_rhs(d, sources)), initial=0.0))
    if cons_err > 1e-5 * float(d.sum(axis=1).max()):
        raise LPError(f"optimum check failed: flow conservation off by {cons_err:.3g} bit/s")
    return cons_err


def solve_optimum(topo: Topology, demand_bps, solver: OptimumSolver = "simplex",
                  time_limit_seconds: float | None = None,
                  shorten: str | None = None, shorten_slack: float = 1e-4,
                  rel_check_tol: float = 1e-5, tree_start: bool = False) -> OptimumResult:
    """Minimum MLU over all routings of ``demand_bps`` ([N, N] array or TrafficMatrix).

    ``shorten`` = "hop" or "latency" runs a second pass that keeps MLU within ``shorten_slack``
    (relative) of the optimum and minimises total flow x path cost: the same MLU carried on short
    routes and without circulations, which is what path seeding wants. The reported ``mlu`` is
    then that second solution's (at most optimum x (1 + slack)); with ``solver="simplex"`` it runs
    primal simplex from the first pass's optimal basis (primal feasible for it).

    ``tree_start`` (simplex only) starts primal simplex from the fewest-hop routing
    (``tree_start_basis``) instead of dual simplex from scratch: the same MLU, several times faster on
    large WANs, possibly another of the optimal routings where several tie.

    Raises ``LPError`` when HiGHS stops short of optimal or when the returned flows fail the
    independent check (conservation, MLU recomputed from loads vs the solver's objective).
    """
    t0 = time.perf_counter()
    d = demand_matrix(topo, demand_bps)
    n, L = topo.num_nodes, topo.num_links
    sources = np.flatnonzero(d.sum(axis=1) > 0)
    S = sources.size
    if S == 0:
        return OptimumResult(0.0, np.zeros(L), 0.0, time.perf_counter() - t0, 0.0, "no demand", 0, 0,
                             sources, np.zeros((0, L)), 0.0)
    # Keep coefficients near 1: HiGHS tolerances are absolute.
    dmax = float(d.max())
    cmax = float(topo.capacity_bps.max())
    b = source_rhs(d, sources) / dmax  # [S, N]
    h = source_flow_model(topo, sources, b, solver, time_limit_seconds)
    n_cols, n_rows = S * L + 1, S * n + L
    ll = np.tile(np.arange(L), S)
    if tree_start and solver == "simplex":
        h.setBasis(tree_start_basis(topo, sources, b))
        h.setOptionValue("simplex_strategy", _PRIMAL_SIMPLEX)
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    run_to_optimum(h)
    u_opt = float(h.getSolution().col_value[-1])
    if shorten is not None:
        metric = {"hop": np.ones(L), "latency": topo.latency_seconds}.get(shorten)
        if metric is None:
            raise ValueError(f"shorten must be 'hop', 'latency' or None, not {shorten!r}")
        metric = metric / metric.max()
        # Second pass: cap U just above the optimum and minimise flow x cost (a warm start on simplex).
        h.changeColBounds(n_cols - 1, 0.0, u_opt * (1.0 + shorten_slack) + 1e-12)
        cost = np.concatenate([metric[ll], [0.0]])
        h.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), cost)
        if solver == "simplex":
            h.setOptionValue("simplex_strategy", _PRIMAL_SIMPLEX)
        run_to_optimum(h)
    solve = time.perf_counter() - t1
    x = np.asarray(h.getSolution().col_value)
    flows = np.clip(x[:-1], 0.0, None).reshape(S, L) * dmax
    loads = flows.sum(axis=0)
    mlu_check = float(np.max(loads / topo.capacity_bps, initial=0.0))
    u_solver = float(x[-1]) * dmax / cmax
    # Independent check: conservation of the returned flows, and MLU recomputed from loads.
    cons_err = check_conservation(topo, d, sources, flows)
    if shorten is None and abs(mlu_check - u_solver) > rel_check_tol * max(mlu_check, u_solver) + 1e-12:
        raise LPError(f"optimum check failed: solver MLU {u_solver:.9g}, recomputed {mlu_check:.9g}")
    status = h.modelStatusToString(h.getModelStatus())
    return OptimumResult(mlu_check, loads, solve, build, u_solver, status, n_cols, n_rows,
                         sources.astype(np.int64), flows, cons_err)


def decompose_flows(topo: Topology, demand_bps, result: OptimumResult, rel_tol: float = 1e-6,
                    as_links: bool = False) -> dict[tuple[int, int], list[tuple[list[int], float]]]:
    """Split each source's optimal flow into loop-free s->t paths: {(s, t): [(nodes, bps), ...]}
    (with ``as_links``, each path as a tuple of link ids instead of a node list).

    Per source, repeatedly take the BFS tree (fewest hops) over links that still carry flow and push
    min(remaining demand, bottleneck) along the tree path of every destination still owed traffic.
    Each push empties a link or a demand, so this ends; flow left over lies on circulations, which
    carry no demand and are dropped. Paths carrying less than ``rel_tol`` of their pair's demand
    are dropped too (solver noise).
    """
    from scipy.sparse.csgraph import breadth_first_order

    d = demand_matrix(topo, demand_bps)
    n, L = topo.num_nodes, topo.num_links
    link_of = sp.csr_matrix((np.arange(1, L + 1), (topo.src, topo.dst)), shape=(n, n)).toarray() - 1
    out: dict[tuple[int, int], list[tuple[list[int], float]]] = {}
    for i, s in enumerate(result.sources.tolist()):
        flow = result.flows_bps[i].copy()
        owed = d[s].copy()
        eps = rel_tol * max(float(owed.max()), 1e-300)
        while True:
            targets = np.flatnonzero(owed > eps)
            if targets.size == 0:
                break
            on = flow > eps
            g = sp.csr_matrix((np.ones(int(on.sum())), (topo.src[on], topo.dst[on])), shape=(n, n))
            _, pred = breadth_first_order(g, s, directed=True, return_predecessors=True)
            reachable = targets[pred[targets] >= 0]
            if reachable.size == 0:
                break  # what is left is below tolerance or solver noise on cycles
            # Tree paths of all reachable targets at once: column j climbs from reachable[j] to s.
            climb = [reachable]
            while np.any(climb[-1] != s):
                climb.append(np.where(climb[-1] == s, s, pred[climb[-1]]))
            anc = np.stack(climb)  # [depth + 1, R]
            below = anc[:-1] != s  # step j of column r is a link (anc[j + 1, r] -> anc[j, r])
            links = link_of[anc[1:], anc[:-1]]
            hops = below.sum(axis=0)
            rows = (links if as_links else anc).T.tolist()
            last = hops - 1 if as_links else hops  # a path's last entry in its (reversed) row
            need = np.bincount(links[below], weights=np.broadcast_to(owed[reachable], links.shape)[below],
                               minlength=L)
            if np.all(need <= flow + eps):
                # No link runs dry this round (within the noise tolerance), so every push is the whole
                # of what is owed.
                flow = np.maximum(flow - need, 0.0)
                for r, t in enumerate(reachable.tolist()):
                    out.setdefault((s, t), []).append((_path(rows[r], last[r], as_links), float(owed[t])))
                owed[reachable] = 0.0
                continue
            for r, t in enumerate(reachable.tolist()):
                path_links = links[:hops[r], r]
                amount = min(float(owed[t]), float(flow[path_links].min()))
                if amount <= eps:
                    continue  # an earlier push this round emptied a link of this tree path
                flow[path_links] -= amount
                owed[t] -= amount
                out.setdefault((s, t), []).append((_path(rows[r], last[r], as_links), amount))
    return out


def _path(row: list[int], last: int, as_links: bool):
    """The s->t path held reversed in ``row[:last + 1]``: a node list, or a link-id tuple."""
    path = row[last::-1]
    return tuple(path) if as_links else path
