"""Speed of the controller's pure control-loop work (no switches): weight quantisation, failure
masking, desired-state and make-before-break planning, and one full control interval of the core
(TM snapshot + measurements + routing + plan) with the ECMP and LP routers.

    TELLM_DATA_DIR=../shared/data nice -n 10 python benchmarks/controller_plan.py \
        --topologies Abilene geant Cogentco --out benchmarks/results/controller_plan.json
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
from tellm.controller.core import ControllerCore
from tellm.controller.failure import mask_split
from tellm.controller.groups import desired_state
from tellm.controller.planner import Installed, plan_update
from tellm.controller.quantise import quantise_weights
from tellm.controller.routers import ECMPRouter, LPRouter

from tecore import compute_paths, generate, load_topology


def timed(fn, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, out


def bench(name: str, k: int, repeats: int) -> dict:
    topo = load_topology(name)
    t0 = time.perf_counter()
    paths = compute_paths(topo, k=k)
    path_seconds = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    raw = rng.random(paths.num_paths)
    split = raw / np.add.reduceat(raw, paths.pair_ptr[:-1])[paths.path_pair]
    dpid = np.arange(1, topo.num_nodes + 1)
    port = np.arange(topo.num_links) % 48 + 1
    up = np.ones(topo.num_links)
    up[0] = 0
    r: dict = {"topology": topo.name, "nodes": topo.num_nodes, "links": topo.num_links, "pairs": paths.num_pairs,
               "paths": paths.num_paths, "k": k, "path_compute_seconds": round(path_seconds, 2)}
    r["quantise_ms"], w = timed(lambda: quantise_weights(split, paths.pair_ptr), repeats)
    r["mask_split_ms"], _ = timed(lambda: mask_split(paths, split, up), repeats)
    r["desired_state_ms"], st = timed(lambda: desired_state(topo, paths, w, dpid, port), repeats)
    r["plan_first_install_ms"], plan = timed(lambda: plan_update(Installed(), st), repeats)
    r["first_install_ops"] = len(plan.ops)
    raw2 = raw * rng.uniform(0.8, 1.25, size=raw.size)
    split2 = raw2 / np.add.reduceat(raw2, paths.pair_ptr[:-1])[paths.path_pair]
    st2 = desired_state(topo, paths, quantise_weights(split2, paths.pair_ptr), dpid, port)
    r["plan_update_ms"], plan2 = timed(lambda: plan_update(plan.after, st2), repeats)
    r["update_ops"] = len(plan2.ops)
    # One full control interval of the core with measured counters (gravity TM) and all links up.
    tm = generate(topo, "gravity", 1, seed=0)[0].demand_bps
    for router in [ECMPRouter()] + ([LPRouter()] if topo.num_nodes <= 60 else []):
        core = ControllerCore(topo, paths, {n: i + 1 for i, n in enumerate(topo.nodes)}, router)
        for d in range(1, topo.num_nodes + 1):
            core.switch_connected(d)
        for lid in range(topo.num_links):
            core.link_discovered(int(topo.src[lid]) + 1, int(port[lid]), int(topo.dst[lid]) + 1, 1000 + lid)
        n = topo.num_nodes
        _, dst = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        for s in range(n):
            core.class_stats(s + 1, dst[s] + 1, np.zeros(n, dtype=np.uint64), 0.0)
            core.class_stats(s + 1, dst[s] + 1, (tm[s] / 8).astype(np.uint64), 1.0)

        scale = [1.0]

        def interval(core=core, n=n, dst=dst, scale=scale):  # bound now: defined inside a loop
            # Steady state: the TM drifts by a few percent per interval (each pair independently).
            scale[0] += 1.0
            drift = rng.uniform(0.95, 1.05, size=(n, n))
            for s in range(n):
                core.class_stats(s + 1, dst[s] + 1, (tm[s] / 8 * scale[0] * drift[s]).astype(np.uint64), scale[0])
            inp = core.routing_input(scale[0], force=True)
            routing = core.router.route(inp)
            p = core.apply_routing(routing, inp, scale[0])
            core.commit(p)
            return routing, len(p.ops)

        t0 = time.perf_counter()
        interval()  # first install (every group and label), not steady state
        r[f"first_interval_{router.name}_ms"] = (time.perf_counter() - t0) * 1e3
        r[f"interval_{router.name}_ms"], (routing, n_ops) = timed(interval, max(1, repeats // 2))
        r[f"route_{router.name}_ms"] = round(routing.seconds * 1e3, 3)
        r[f"interval_{router.name}_ops"] = n_ops
    r["snapshot_ms"], _ = timed(core.make_snapshot, max(1, repeats // 2))
    r["load_average_1min"] = os.getloadavg()[0]
    return {k_: (round(v, 3) if isinstance(v, float) else v) for k_, v in r.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topologies", nargs="+", default=["Abilene", "geant", "Cogentco"])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/controller_plan.json"))
    args = ap.parse_args()
    results = []
    for name in args.topologies:
        res = bench(name, args.k, args.repeats)
        print(json.dumps(res))
        results.append(res)
    doc = {"benchmark": "controller_plan", "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "cpu_count": __import__("os").cpu_count(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
