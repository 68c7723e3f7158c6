"""Shortened min-MLU optima of a sequence of TMs on one topology, each LP re-solved from the last basis.

The source-aggregated LP of ``tecore.optimum`` differs between TMs only in its right-hand side (the
demands), so a chain keeps its two HiGHS models and re-solves them:

- min-MLU: new demands, then dual simplex from the previous TM's optimal basis (still dual feasible);
  the chain's first TM is solved from scratch, with presolve.
- shorten (minimise flow x hop or latency with U capped at optimum x (1 + slack)): starts from the
  min-MLU optimum's basis, which is primal feasible for it, with primal simplex.

Where several optimal vertices tie, which one a re-solve lands on depends on where it started, so the
answers depend on the TMs' order in the chain: callers fix their chains, never the worker count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import highspy
import numpy as np

from .lp import LPError, run_to_optimum
from .optimum import OptimumResult, demand_matrix, check_conservation, source_flow_model, source_rhs
from .topology import Topology

#: HiGHS ``simplex_strategy`` values: dual (re-solves after a right-hand side change), primal (the
#: shorten pass, started from a primal feasible basis).
_DUAL_SIMPLEX, _PRIMAL_SIMPLEX = 1, 4


@dataclass
class ChainedOptimum:
    """The shortened min-MLU optimum of each TM handed to ``solve``, warm-started from the previous one.

    Every node is a source row block (a node without demand has an all-zero block), so all TMs share
    one model shape.
    """

    topo: Topology
    shorten: str = "hop"
    shorten_slack: float = 1e-4
    _min_mlu: highspy.Highs | None = field(default=None, init=False, repr=False)
    _short: highspy.Highs | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        metric = {"hop": np.ones(self.topo.num_links), "latency": self.topo.latency_seconds}.get(self.shorten)
        if metric is None:
            raise ValueError(f"shorten must be 'hop' or 'latency', not {self.shorten!r}")
        self._metric = metric / metric.max()

    def _models(self, b: np.ndarray) -> tuple[highspy.Highs, highspy.Highs]:
        if self._min_mlu is None:
            sources = np.arange(self.topo.num_nodes)
            self._min_mlu = source_flow_model(self.topo, sources, b)
            self._min_mlu.setOptionValue("simplex_strategy", _DUAL_SIMPLEX)
            short = source_flow_model(self.topo, sources, b)
            n_cols = sources.size * self.topo.num_links + 1
            cost = np.concatenate([np.tile(self._metric, sources.size), [0.0]])
            short.changeColsCost(n_cols, np.arange(n_cols, dtype=np.int32), cost)
            short.setOptionValue("simplex_strategy", _PRIMAL_SIMPLEX)
            self._short = short
            return self._min_mlu, short
        rows = np.arange(b.size, dtype=np.int32)
        for h in (self._min_mlu, self._short):
            h.changeRowsBounds(b.size, rows, b.ravel(), b.ravel())
        return self._min_mlu, self._short

    def solve(self, demand_bps) -> OptimumResult:
        """The TM's min-MLU routing, shortened (``OptimumResult`` with every node as a source)."""
        t0 = time.perf_counter()
        topo = self.topo
        d = demand_matrix(topo, demand_bps)
        n, L = topo.num_nodes, topo.num_links
        sources = np.arange(n)
        dmax = float(d.max())
        if dmax <= 0.0:
            raise ValueError("the TM has no demand")
        b = source_rhs(d, sources) / dmax
        min_mlu, short = self._models(b)
        build = time.perf_counter() - t0
        t1 = time.perf_counter()
        run_to_optimum(min_mlu)
        u_opt = float(min_mlu.getSolution().col_value[-1])
        u_col = n * L
        short.changeColBounds(u_col, 0.0, u_opt * (1.0 + self.shorten_slack) + 1e-12)
        short.setBasis(min_mlu.getBasis())
        run_to_optimum(short)
        solve = time.perf_counter() - t1
        x = np.asarray(short.getSolution().col_value)
        flows = np.clip(x[:-1], 0.0, None).reshape(n, L) * dmax
        loads = flows.sum(axis=0)
        mlu = float(np.max(loads / topo.capacity_bps, initial=0.0))
        u_bound = u_opt * (1.0 + self.shorten_slack) * dmax / float(topo.capacity_bps.max())
        if mlu > u_bound * (1.0 + 1e-5) + 1e-12:
            raise LPError(f"optimum check failed: shortened MLU {mlu:.9g} above its cap {u_bound:.9g}")
        cons_err = check_conservation(topo, d, sources, flows)
        return OptimumResult(mlu, loads, solve, build, float(x[-1]) * dmax / float(topo.capacity_bps.max()),
                             short.modelStatusToString(short.getModelStatus()), n * L + 1, n * n + L,
                             sources.astype(np.int64), flows, cons_err)
