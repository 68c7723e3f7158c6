"""Per-policy TE objectives over candidate paths, and their LP optimum with HiGHS.

The policy vector (see tellm.contract.policies) has two knobs; this module solves and evaluates
the objective they define, exactly:

    minimise   U  +  lambda * S(x)
    subject to sum_{p in P(i)} x_p = 1                                   for each pair i with demand > 0
               (load_l(x) + h * max_i load_il(x)) / c_l  <=  U           for each link l
               x >= 0

- h (``headroom_fraction``, [0, 0.5]) is burst headroom: every pair may surge by h of its demand,
  and each link keeps room for the surge of the largest pair it carries (load_il = the part of pair
  i's demand that crosses link l, summed over i's paths through l). U is then the *effective*
  utilisation: ``fits`` says whether it is <= 1, i.e. whether any one pair can burst by h without
  overloading a link. Unlike a uniform capacity reserve, this changes the optimal split: a large pair
  is spread over more paths so that its burst lands on several links (TELLM's history-dependency
  knob spreads volatile demands for the same reason; here the burst is a share of the demand, so no
  history is needed and the LP stays exact). With h = 0 it is the plain min-MLU problem.
- lambda (``latency_weight``, [0, 1]): S(x) is the latency stretch, the demand-weighted mean path
  latency divided by the demand-weighted mean of each pair's lowest candidate-path latency. S >= 1,
  dimensionless, so lambda = 0.1 trades 0.1 of utilisation for a 100 % longer mean latency.

lambda = 0 and h = 0 is the plain min-MLU problem of tecore.lp (same optimum). Demands and
capacities are normalised as in tecore.lp; the objective is recomputed from the returned split and
checked against the solver's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .evaluate import link_loads
from .lp import LPError, build_path_lp, check_pair_demand, pair_link_index, run_to_optimum
from .pathset import PathSet
from .topology import Topology

MAX_HEADROOM_FRACTION = 0.5
MAX_LATENCY_WEIGHT = 1.0


@dataclass(frozen=True)
class ObjectiveValue:
    mlu: float  # max load / capacity (no headroom)
    effective_utilisation: float  # max over links of (load + h * largest pair load) / capacity
    fits: bool  # effective_utilisation <= 1: any one pair can surge by h without overloading a link
    mean_latency_seconds: float  # demand-weighted mean path latency
    latency_stretch: float  # mean latency / demand-weighted mean lowest candidate latency (>= 1); nan if undefined
    objective: float  # effective_utilisation + lambda * latency_stretch

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class PolicyLPResult:
    split: np.ndarray  # float64 [Np]
    link_loads_bps: np.ndarray  # float64 [L]
    value: ObjectiveValue
    solver_objective: float
    solve_seconds: float
    build_seconds: float
    status: str


def _check_knobs(latency_weight: float, headroom_fraction: float) -> None:
    if not np.isfinite(latency_weight) or not 0.0 <= latency_weight <= MAX_LATENCY_WEIGHT:
        raise ValueError(f"latency_weight {latency_weight!r} outside [0, {MAX_LATENCY_WEIGHT}]")
    if not np.isfinite(headroom_fraction) or not 0.0 <= headroom_fraction <= MAX_HEADROOM_FRACTION:
        raise ValueError(f"headroom_fraction {headroom_fraction!r} outside [0, {MAX_HEADROOM_FRACTION}]")


def _latency_terms(topo: Topology, paths: PathSet, demand: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-path latency [Np] and the stretch denominator (demand-weighted mean lowest latency)."""
    path_lat = paths.path_cost(topo.latency_seconds)
    total = float(demand.sum())
    if total <= 0:
        return path_lat, float("nan")
    best = np.minimum.reduceat(path_lat, paths.pair_ptr[:-1])
    return path_lat, float(demand @ best) / total


def surge_load_bps(paths: PathSet, split: np.ndarray, pair_demand_bps: np.ndarray) -> np.ndarray:
    """Per link, the largest load any single pair puts on it (summed over that pair's paths) [L]."""
    inc_path = np.repeat(np.arange(paths.num_paths), np.diff(paths.path_ptr))
    group, group_link = pair_link_index(paths.path_pair, inc_path, paths.path_links, paths.num_links)
    flow = (split * pair_demand_bps[paths.path_pair])[inc_path]
    per_group = np.bincount(group, weights=flow, minlength=group_link.size)
    surge = np.zeros(paths.num_links)
    np.maximum.at(surge, group_link, per_group)
    return surge


def evaluate_objective(topo: Topology, paths: PathSet, pair_demand_bps: np.ndarray, split: np.ndarray,
                       latency_weight: float = 0.0, headroom_fraction: float = 0.0) -> ObjectiveValue:
    """The policy objective of any split (a model's, ECMP's, an LP's)."""
    _check_knobs(latency_weight, headroom_fraction)
    demand = np.asarray(pair_demand_bps, dtype=np.float64)
    split = np.asarray(split, dtype=np.float64)
    loads = link_loads(paths, split, demand)
    util = float(np.max(loads / topo.capacity_bps, initial=0.0))
    eff = util
    if headroom_fraction > 0:
        eff_loads = loads + headroom_fraction * surge_load_bps(paths, split, demand)
        eff = float(np.max(eff_loads / topo.capacity_bps, initial=0.0))
    path_lat, base = _latency_terms(topo, paths, demand)
    total = float(demand.sum())
    mean_lat = float((split * demand[paths.path_pair]) @ path_lat) / total if total > 0 else 0.0
    stretch = mean_lat / base if total > 0 and base > 0 else float("nan")
    if latency_weight > 0 and not np.isfinite(stretch):
        if total > 0:
            raise ValueError("latency_aware needs positive link latencies (every lowest-latency path is 0 s)")
        stretch = 1.0
    objective = eff + (latency_weight * stretch if latency_weight > 0 else 0.0)
    return ObjectiveValue(util, eff, bool(eff <= 1.0 + 1e-9), mean_lat, stretch, objective)


def solve_policy_lp(topo: Topology, paths: PathSet, pair_demand_bps: np.ndarray, latency_weight: float = 0.0,
                    headroom_fraction: float = 0.0, solver: str = "choose",
                    time_limit_seconds: float | None = None, rel_check_tol: float = 1e-5) -> PolicyLPResult:
    """Optimal split for the policy objective (module docstring) over ``paths``."""
    t0 = time.perf_counter()
    _check_knobs(latency_weight, headroom_fraction)
    demand = check_pair_demand(paths, pair_demand_bps)
    split = np.zeros(paths.num_paths)
    split[paths.pair_ptr[:-1]] = 1.0  # pairs without demand: their first (shortest) path
    dmax = float(demand.max(initial=0.0))
    if dmax == 0.0:
        value = evaluate_objective(topo, paths, demand, split, latency_weight, headroom_fraction)
        return PolicyLPResult(split, np.zeros(topo.num_links), value, value.objective, 0.0,
                              time.perf_counter() - t0, "no demand")
    path_lat, lat_base = _latency_terms(topo, paths, demand)
    if latency_weight > 0 and not lat_base > 0:
        raise ValueError("latency_aware needs positive link latencies (every lowest-latency path is 0 s)")
    scale = dmax / float(topo.capacity_bps.max())  # true utilisation = scale * U_n
    # U_n is the effective utilisation / scale; the objective is divided by `scale` so that U_n keeps
    # cost 1 (as in tecore.lp).
    total = float(demand.sum())
    path_cost = ((latency_weight / scale) * demand[paths.path_pair] * path_lat / (total * lat_base)
                 if latency_weight > 0 else None)
    if solver == "choose" and headroom_fraction > 0:
        # The (pair, link) rows of the surge term: dual simplex took 79 s where IPM (with crossover)
        # took 2.7 s on a germany50 bimodal TM, and IPM was never measured slower by more than 0.5 s.
        solver = "ipm"
    plp = build_path_lp(topo, paths, demand, path_cost=path_cost, surge_fraction=headroom_fraction,
                        solver=solver, time_limit_seconds=time_limit_seconds)
    build = time.perf_counter() - t0
    solve = run_to_optimum(plp.highs)
    status = plp.highs.modelStatusToString(plp.highs.getModelStatus())
    solver_obj = float(plp.highs.getInfo().objective_function_value) * scale
    split = plp.split(paths)
    value = evaluate_objective(topo, paths, demand, split, latency_weight, headroom_fraction)
    if abs(value.objective - solver_obj) > rel_check_tol * max(abs(value.objective), abs(solver_obj)) + 1e-9:
        raise LPError(f"policy LP check failed: solver objective {solver_obj:.9g}, recomputed {value.objective:.9g}")
    return PolicyLPResult(split, link_loads(paths, split, demand), value, solver_obj, solve, build, status)


def solve_policy_vector(topo: Topology, paths: PathSet, pair_demand_bps: np.ndarray, policy_vector: np.ndarray,
                        **kw) -> PolicyLPResult:
    """Same, from the TE head's policy vector (policy[0] = lambda, policy[1] = h)."""
    v = np.asarray(policy_vector, dtype=np.float64).reshape(-1)
    return solve_policy_lp(topo, paths, pair_demand_bps, latency_weight=float(v[0]),
                           headroom_fraction=float(v[1]), **kw)
