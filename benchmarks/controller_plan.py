"""Speed of the controller's control-loop work without switches: quantisation, failure masking, the
forwarding state, make-before-break planning and bulk OpenFlow encoding, and whole control intervals
of the core (TM snapshot -> routing input -> split -> quantise -> plan -> encoded messages) with
- ``ecmp``: the ECMP router (the same split every interval: nothing to send);
- ``dense``: a dense split over every candidate path that drifts each interval, as a model's does (the
  split is drawn before the clock starts: model time excluded); every pair's weights move.
Rules per switch (installed and the bound) are read from the core's GET /state section.

    TELLM_DATA_DIR=../shared/data nice -n 10 python benchmarks/controller_plan.py \
        --topologies Abilene geant Cogentco --out benchmarks/results/controller_plan.json
    # Kdl (754 nodes): one hop-shortest path per pair (568k paths: the 20-bit MPLS labels fit ~1M)
    TELLM_DATA_DIR=../shared/data nice -n 10 python benchmarks/controller_plan.py --topologies Kdl \
        --strategy hop-tree --repeats 3 --append --out benchmarks/results/controller_plan.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from tellm.controller import ofbulk
from tellm.controller.core import ControllerCore
from tellm.controller.failure import mask_split
from tellm.controller.groups import desired_state
from tellm.controller.planner import Installed, plan_update
from tellm.controller.quantise import quantise_weights
from tellm.controller.routers import ECMPRouter, LPRouter, Routing

from scipy.sparse import csgraph, csr_matrix

from tecore import PathSet, compute_paths, generate, load_topology


def timed(fn, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, out


def encode_plan(plan) -> tuple[int, int]:
    """Every message of a plan as OpenFlow bytes; (messages, bytes)."""
    msgs = nbytes = 0
    for _, batches in plan.rounds():
        for enc in ofbulk.encode_plan_round(batches):
            msgs += len(enc)
            nbytes += enc.nbytes
    return msgs, nbytes


class DriftingSplit:
    """A router that returns a dense split over every candidate path, drifting a few percent per call
    (what a model's softmax output does); the splits are drawn up front, so routing costs nothing here."""

    name = "dense"

    def __init__(self, paths, rng, draws: int):
        raw = rng.random(paths.num_paths) + 0.05
        self.splits = []
        for _ in range(draws):
            raw = raw * rng.uniform(0.9, 1.1, size=raw.size)
            self.splits.append(raw / np.add.reduceat(raw, paths.pair_ptr[:-1])[paths.path_pair])
        self.calls = 0

    def route(self, inp) -> Routing:
        split = self.splits[self.calls % len(self.splits)]
        self.calls += 1
        return Routing(split, self.name, float("nan"), 0.0)


def hop_tree_paths(topo) -> PathSet:
    """One hop-shortest path per ordered pair, from BFS trees (scipy; vectorised over pairs): the
    fastest path set to build at Kdl size, and one whose labels fit the 20-bit MPLS space."""
    n = topo.num_nodes
    adj = csr_matrix((np.ones(topo.num_links), (topo.src, topo.dst)), shape=(n, n))
    _, pred = csgraph.shortest_path(adj, unweighted=True, return_predecessors=True)
    src, dst = np.nonzero(~np.eye(n, dtype=bool) & (pred >= 0))
    link_of = np.full((n, n), -1, dtype=np.int64)
    link_of[topo.src, topo.dst] = np.arange(topo.num_links)
    hops_rev, cur = [], dst.copy()
    while True:  # walk every pair's path back from its destination, one hop per step for all pairs
        live = cur != src
        if not live.any():
            break
        prev = np.where(live, pred[src, cur], cur)
        hops_rev.append(np.where(live, link_of[prev, cur], -1))
        cur = prev
    rev = np.stack(hops_rev[::-1], axis=1)  # [P, H]: links back to front, -1 padding at the front
    count = (rev >= 0).sum(axis=1)
    links = rev[rev >= 0]  # row-major: each pair's links in traversal order
    return PathSet(topo.content_hash, n, topo.num_links, np.stack([src, dst], axis=1),
                   np.arange(src.size + 1), np.concatenate([[0], np.cumsum(count)]), links, strategy="hop-tree", k=1)


def _core(topo, paths, router, port):
    core = ControllerCore(topo, paths, {n: i + 1 for i, n in enumerate(topo.nodes)}, router)
    for d in range(1, topo.num_nodes + 1):
        core.switch_connected(d)
    for lid in range(topo.num_links):
        core.link_discovered(int(topo.src[lid]) + 1, int(port[lid]), int(topo.dst[lid]) + 1, 1000 + lid)
    return core


def bench(name: str, k: int, strategy: str | None, max_stretch: float | None, repeats: int) -> dict:
    topo = load_topology(name)
    t0 = time.perf_counter()
    kw = {} if strategy is None else {"strategy": strategy}
    if max_stretch is not None:
        kw.update(max_stretch=max_stretch, stretch_metric="hop")
    paths = hop_tree_paths(topo) if strategy == "hop-tree" else compute_paths(topo, k=k, **kw)
    path_seconds = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    raw = rng.random(paths.num_paths)
    split = raw / np.add.reduceat(raw, paths.pair_ptr[:-1])[paths.path_pair]
    dpid = np.arange(1, topo.num_nodes + 1)
    port = np.arange(topo.num_links) % 48 + 1
    up = np.ones(topo.num_links)
    up[0] = 0
    r: dict = {"topology": topo.name, "nodes": topo.num_nodes, "links": topo.num_links, "pairs": paths.num_pairs,
               "paths": paths.num_paths, "k": paths.k, "strategy": paths.strategy, "max_stretch_hop": max_stretch,
               "path_compute_seconds": round(path_seconds, 2)}
    r["quantise_ms"], w = timed(lambda: quantise_weights(split, paths.pair_ptr), repeats)
    r["mask_split_ms"], _ = timed(lambda: mask_split(paths, split, up), repeats)
    r["desired_state_ms"], st = timed(lambda: desired_state(topo, paths, w, dpid, port), repeats)
    r["plan_first_install_ms"], plan = timed(lambda: plan_update(Installed(), st), repeats)
    r["first_install_ops"] = plan.num_ops
    r["encode_first_install_ms"], (_, nbytes) = timed(lambda: encode_plan(plan), max(1, repeats // 2))
    r["first_install_bytes"] = nbytes
    r["first_install_planned_and_encoded_ms"] = (r["quantise_ms"] + r["desired_state_ms"] +
                                                 r["plan_first_install_ms"] + r["encode_first_install_ms"])
    raw2 = raw * rng.uniform(0.8, 1.25, size=raw.size)
    split2 = raw2 / np.add.reduceat(raw2, paths.pair_ptr[:-1])[paths.path_pair]
    st2 = desired_state(topo, paths, quantise_weights(split2, paths.pair_ptr), dpid, port)
    r["plan_update_ms"], plan2 = timed(lambda: plan_update(plan.after, st2), repeats)
    r["update_ops"] = plan2.num_ops
    del plan, plan2, st, st2
    # Whole control intervals of the core with measured counters (gravity TM) and all links up.
    tm = generate(topo, "gravity", 1, seed=0)[0].demand_bps
    n = topo.num_nodes
    _, dst = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    routers = [ECMPRouter(), DriftingSplit(paths, rng, 4)] + ([LPRouter()] if n <= 60 else [])
    for router in routers:
        core = _core(topo, paths, router, port)
        for s in range(n):
            core.class_stats(s + 1, dst[s] + 1, np.zeros(n, dtype=np.uint64), 0.0)
            core.class_stats(s + 1, dst[s] + 1, (tm[s] / 8).astype(np.uint64), 1.0)
        scale, parts = [1.0], {}

        def interval(core=core, scale=scale, parts=parts):  # bound now: defined inside a loop
            # Counter replies: the TM drifts by a few percent per interval (each pair independently).
            scale[0] += 1.0
            drift = rng.uniform(0.95, 1.05, size=(n, n))
            for s in range(n):
                core.class_stats(s + 1, dst[s] + 1, (tm[s] / 8 * scale[0] * drift[s]).astype(np.uint64), scale[0])
            t0 = time.perf_counter()
            inp = core.routing_input(scale[0], force=True)
            t1 = time.perf_counter()
            routing = core.router.route(inp)
            t2 = time.perf_counter()
            p = core.apply_routing(routing, inp, scale[0])
            t3 = time.perf_counter()
            msgs, nbytes = encode_plan(p)
            t4 = time.perf_counter()
            core.commit(p)
            parts.update(routing_input_ms=(t1 - t0) * 1e3, route_ms=(t2 - t1) * 1e3, plan_ms=(t3 - t2) * 1e3,
                         encode_ms=(t4 - t3) * 1e3)
            return routing, p.num_ops, nbytes

        t0 = time.perf_counter()
        interval()  # first install (every group and label), not steady state
        name_ = router.name
        r[f"first_interval_{name_}_ms"] = (time.perf_counter() - t0) * 1e3
        fw = core.forwarding_json()
        r[f"rules_max_per_switch_{name_}"] = fw["max_rules_per_switch"]
        r[f"rules_mean_per_switch_{name_}"] = round(fw["total_flows"] / n + fw["total_groups"] / n, 1)
        r["rules_bound_per_switch"] = fw["bound_rules_per_switch"]
        r[f"interval_{name_}_ms"], (routing, n_ops, nbytes) = timed(interval, max(1, repeats // 2))
        r[f"interval_{name_}_parts_ms"] = {k_: round(v, 2) for k_, v in parts.items()}
        r[f"route_{name_}_ms"] = round(routing.seconds * 1e3, 3)
        r[f"interval_{name_}_ops"] = n_ops
        r[f"interval_{name_}_bytes"] = nbytes
        r[f"interval_{name_}_model_excluded_ms"] = r[f"interval_{name_}_ms"] - routing.seconds * 1e3
        if router is not routers[-1]:
            del core
    r["snapshot_ms"], _ = timed(core.make_snapshot, max(1, repeats // 2))
    r["load_average_1min"] = os.getloadavg()[0]
    return {k_: (round(v, 3) if isinstance(v, float) else v) for k_, v in r.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topologies", nargs="+", default=["Abilene", "geant", "Cogentco"])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--strategy", default=None,
                    help="path strategy (default: tecore's); hop-tree = one hop-shortest path per pair (BFS)")
    ap.add_argument("--max-stretch", type=float, default=None, help="hop stretch bound of the paths")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--append", action="store_true", help="add to the results already in --out")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/controller_plan.json"))
    args = ap.parse_args()
    results = []
    if args.append and args.out.exists():
        results = [r for r in json.loads(args.out.read_text())["results"] if r["topology"] not in args.topologies]
    for name in args.topologies:
        res = bench(name, args.k, args.strategy, args.max_stretch, args.repeats)
        print(json.dumps(res))
        results.append(res)
    doc = {"benchmark": "controller_plan", "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "cpu_count": os.cpu_count(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
