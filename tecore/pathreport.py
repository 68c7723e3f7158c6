"""How much a candidate path set costs: path-LP / exact optimum over a TM sample, stretch, build time,
and its single-failure coverage.

Used by ``tellm paths --report`` and benchmarks/bench_paths_optimum.py. The TMs must be ones the
path set was not built from (the optimum-seeded strategy draws its own with a far-away seed).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .coverage import coverage
from .lp import solve_min_mlu
from .optimum import solve_optimum
from .paths import compute_paths
from .stretch import path_stretch
from .topology import Topology
from .traffic import TrafficMatrix, generate

REPORT_FAMILIES = ("gravity", "hotspot", "bimodal")


@dataclass
class StrategyReport:
    topology: str
    strategy: str
    k: int
    max_stretch: float | None
    build_seconds: float
    num_paths: int
    paths_per_pair_mean: float
    stretch_mean: float  # hop stretch over all paths (1.0 = shortest)
    stretch_p95: float
    stretch_max: float
    ratio_geomean: float  # path-LP MLU / exact optimum MLU, over all TMs
    ratio_worst: float
    ratio_by_family: dict[str, dict[str, float]] = field(default_factory=dict)  # family -> geomean/worst
    rows: list[dict] = field(default_factory=list)  # per TM: label, family, mlu_opt, mlu_lp, ratio, seconds
    coverage: dict = field(default_factory=dict)  # single-failure coverage (tecore.coverage.Coverage.as_dict)

    def as_dict(self) -> dict:
        return asdict(self)


def geomean(xs) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return float(math.exp(sum(map(math.log, xs)) / len(xs))) if xs else float("nan")


def sample_tms(topo: Topology, families=REPORT_FAMILIES, per_family: int = 3,
               seed: int = 0) -> list[tuple[str, TrafficMatrix]]:
    """(family, TM) pairs drawn with ``seed`` (scale is irrelevant: the ratio is scale-free)."""
    return [(fam, tm) for fam in families for tm in generate(topo, fam, per_family, seed=seed)]


def optimum_mlus(topo: Topology, tms: list[tuple[str, TrafficMatrix]]) -> list[tuple[float, float]]:
    """(exact optimum MLU, solve seconds) per TM."""
    out = []
    for _, tm in tms:
        r = solve_optimum(topo, tm, solver="simplex")
        out.append((r.mlu, r.solve_seconds))
    return out


def evaluate_strategy(topo: Topology, tms: list[tuple[str, TrafficMatrix]], opt: list[tuple[float, float]],
                      strategy: str, k: int, max_stretch: float | None = None, seed: int = 0,
                      workers: int | None = None, use_cache: bool = False) -> StrategyReport:
    t0 = time.perf_counter()
    ps = compute_paths(topo, k=k, strategy=strategy, max_stretch=max_stretch, seed=seed, workers=workers,
                       use_cache=use_cache)
    build = time.perf_counter() - t0
    stretch = path_stretch(topo, ps, "hop")
    rows = []
    for (fam, tm), (m_opt, opt_s) in zip(tms, opt):
        r = solve_min_mlu(topo, ps, tm.pair_demands(ps.pairs), solver="simplex")
        rows.append({"tm": tm.label, "family": fam, "mlu_opt": m_opt, "mlu_lp": r.mlu,
                     "ratio": r.mlu / m_opt if m_opt > 0 else float("nan"),
                     "opt_seconds": opt_s, "lp_seconds": r.solve_seconds})
    by_fam = {}
    for fam in dict.fromkeys(f for f, _ in tms):
        rs = [r["ratio"] for r in rows if r["family"] == fam]
        by_fam[fam] = {"geomean": geomean(rs), "worst": float(max(rs))}
    ratios = [r["ratio"] for r in rows]
    return StrategyReport(topo.name, strategy, k, max_stretch, build, ps.num_paths,
                          float(ps.paths_per_pair.mean()), float(stretch.mean()),
                          float(np.percentile(stretch, 95)), float(stretch.max()),
                          geomean(ratios), float(max(ratios)), by_fam, rows, coverage(topo, ps).as_dict(topo))
