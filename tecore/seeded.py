"""The optimum-seeded path strategy: paths that carry flow in exact min-MLU solutions of sample TMs.

Per pair: its shortest path, then the paths that carry its flow in the sample solutions (most carried
share first), then least-overlap paths (``tecore.diverse``), up to k. When those k leave a link whose
loss the pair would survive on every one of its paths, the last of them gives way to the first other
candidate that closes the gap (the least-overlap path always does where one exists), so the set keeps
single-failure coverage (``tecore.coverage``).
"""

from __future__ import annotations

import numpy as np

from .coverage import uncovered_pairs
from .diverse import FlatPaths
from .links import link_groups
from .optimum import decompose_flows, solve_optimum
from .pathpool import with_progress
from .topology import Topology
from .traffic import generate

#: Per-pair strategy used to top optimum-seeded pairs up to k (diverse shortest paths).
SEED_TOPUP_STRATEGY = "diverse"
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


def seeding_fits(topo: Topology) -> bool:
    """Whether the seeding LP of ``topo`` is small enough to solve (see ``SEED_MAX_LP_COLUMNS``)."""
    return topo.num_nodes * topo.num_links <= SEED_MAX_LP_COLUMNS


def _seed_flows(topo: Topology, tm) -> list[tuple[int, int, tuple[int, ...], float]]:
    """(s, t, link ids, share of the pair's demand) of every path of one sample TM's optimum."""
    res = solve_optimum(topo, tm, solver="simplex", shorten="hop", tree_start=True)
    d = tm.demand_bps
    return [(s, t, links, bps / d[s, t])
            for (s, t), flows in decompose_flows(topo, tm, res, as_links=True).items() for links, bps in flows]


def seed_shares(topo: Topology, seed: int, progress: bool = False,
                workers: int = 1) -> dict[tuple[int, int], dict[tuple[int, ...], float]]:
    """{(s, t): {link-id tuple: summed share of the pair's demand}} over the sample TMs' optima,
    solved in ``workers`` forked processes (one TM each; the sums are taken in TM order).

    Each optimum starts primal simplex from the fewest-hop routing (``tecore.optimum.tree_start_basis``)
    and runs a second, "shorten" pass (same MLU within 1e-4, least total hop x flow) so the paths are
    short and free of circulations; decomposition is deterministic, and so is HiGHS' serial simplex,
    so a fixed ``seed`` gives a fixed path set for any number of workers.
    """
    tms = [tm for fam in SEED_FAMILIES
           for tm in generate(topo, fam, SEED_TMS_PER_FAMILY, seed=SEED_TM_OFFSET + seed)]
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            per_tm = list(with_progress(pool.map(_seed_flows, [topo] * len(tms), tms), len(tms),
                                        f"optimum {topo.name}", progress))
    else:
        per_tm = [_seed_flows(topo, tm) for tm in with_progress(iter(tms), len(tms), f"optimum {topo.name}", progress)]
    share: dict[tuple[int, int], dict[tuple[int, ...], float]] = {}
    for flows in per_tm:
        for s, t, key, frac in flows:
            acc = share.setdefault((s, t), {})
            acc[key] = acc.get(key, 0.0) + frac
    return share


def compose(topo: Topology, k: int, pairs: np.ndarray, base: FlatPaths,
            share: dict[tuple[int, int], dict[tuple[int, ...], float]],
            max_cost: np.ndarray | None = None, link_cost: np.ndarray | None = None) -> FlatPaths:
    """Per pair: base's first path, the seeded paths by share, base's other paths; k of them, with the
    last slot given to a covering candidate where the first k leave an avoidable link on every path.
    ``max_cost`` [P] (with ``link_cost`` [L]) drops seeded paths costlier than the pair's bound."""
    groups = link_groups(topo).tolist()
    starts = np.searchsorted(base.pair, np.arange(pairs.shape[0]))
    ends = np.searchsorted(base.pair, np.arange(pairs.shape[0]), side="right")
    links_list = base.links.tolist()
    ptr = base.ptr.tolist()
    out_pair, out_links, out_hops = [], [], []
    for i, (s, t) in enumerate(pairs.tolist()):
        own = [tuple(links_list[ptr[j]:ptr[j + 1]]) for j in range(starts[i], ends[i])]
        if not own:
            continue
        seeded = sorted(share.get((s, t), {}).items(), key=lambda kv: (-round(kv[1], 9), len(kv[0]), kv[0]))
        if max_cost is not None:  # the stretch bound: seeded paths longer than it are never picked
            seeded = [kv for kv in seeded if link_cost[list(kv[0])].sum() <= max_cost[i]]
        cands = list(dict.fromkeys([own[0]] + [p for p, _ in seeded] + own[1:]))
        chosen = cands[:k]
        if len(chosen) > 1 and len(own) > 1:
            chosen = _covering(chosen, cands[k:] + own[1:], groups, own)
        for p in chosen:
            out_pair.append(i)
            out_links.extend(p)
            out_hops.append(len(p))
    return FlatPaths(np.array(out_pair, np.int64), np.concatenate([[0], np.cumsum(out_hops)]).astype(np.int64),
                     np.array(out_links, np.int64))


def _covering(chosen: list[tuple[int, ...]], spare: list[tuple[int, ...]], groups: list[int],
              own: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """``chosen`` unless its paths share a group (``groups``: link -> cable group) that the
    least-overlap paths ``own`` show avoidable; then its last path is replaced by the first spare
    candidate that avoids what the rest share."""
    def gset(p):
        return {groups[l] for l in p}

    shared = set.intersection(*(gset(p) for p in chosen))
    unavoidable = set.intersection(*(gset(p) for p in own))  # what every least-overlap path crosses
    if shared <= unavoidable:
        return chosen
    rest_shared = set.intersection(*(gset(p) for p in chosen[:-1])) - unavoidable
    for c in spare:
        if c not in chosen[:-1] and not (rest_shared & gset(c)):
            return chosen[:-1] + [c]
    return chosen


def keep_coverage(topo: Topology, pairs: np.ndarray, composed: FlatPaths, base: FlatPaths) -> FlatPaths:
    """``composed``, except that a pair it leaves without single-failure coverage where ``base`` covers
    it gets its ``base`` paths back."""
    gaps = uncovered_pairs(topo, pairs, composed)
    if gaps.size == 0:
        return composed
    swap = np.setdiff1d(gaps[:, 0], uncovered_pairs(topo, pairs, base)[:, 0])
    if swap.size == 0:
        return composed
    mine = FlatPaths.concat([composed.take(np.flatnonzero(~np.isin(composed.pair, swap))),
                             base.take(np.flatnonzero(np.isin(base.pair, swap)))])
    return mine.take(np.argsort(mine.pair, kind="stable"))
