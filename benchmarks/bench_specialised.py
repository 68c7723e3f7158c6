#!/usr/bin/env python3
"""Generic vs per-topology specialised TE head, model only, same process, same TMs (CPU or CUDA).

Per topology: registers it as the service does (``topologies.build_topology``), then times
- ``generic``: the shipped graph through ``LoadedModel.run_bound`` (the service's previous path);
- ``specialised``: ``TopologyHead.run`` at batch 1 (on CUDA with and without the CUDA graph) and at
  larger batches (time per TM), the head's build time (registration cost) and its first run;
and checks the two against each other on a TM with a link down and a non-zero policy (max split
difference, MLU relative difference, every split finite, >= 0, summing to 1 per pair).
Old and new runs alternate, so machine load hits both alike. Times are medians of ``--runs``.

    python benchmarks/bench_specialised.py --provider cpu --topologies Abilene sndlib:geant zoo:GtsCe
    python benchmarks/bench_specialised.py --provider cuda --synthetic-paths zoo:Kdl --topologies zoo:Kdl
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def register(topo, paths):
    from tellm.inference.topologies import build_topology

    return build_topology(topo.nodes, topo.src, topo.dst, topo.capacity_bps, topo.latency_seconds,
                          paths.pairs[:, 0], paths.pairs[:, 1], np.diff(paths.pair_ptr), np.diff(paths.path_ptr),
                          paths.path_links, name=topo.name)


def split_valid(arrays, split) -> bool:
    sums = np.bincount(arrays.path_pair, split, minlength=arrays.num_pairs)
    return bool(np.isfinite(split).all() and (split >= 0).all() and np.abs(sums - 1).max() < 1e-4)


def check(arrays, out_gen, out_new) -> dict:
    split = out_new["split"]
    mlu_new, mlu_gen = float(np.ravel(out_new["mlu"])[0]), float(np.ravel(out_gen["mlu"])[0])
    return {"max_split_diff": float(np.abs(split - out_gen["split"]).max()),
            "mlu_rel_diff": abs(mlu_new - mlu_gen) / max(abs(mlu_gen), 1e-30),
            "split_valid": split_valid(arrays, split)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--model", type=Path, default=None, help="generic graph (default: the shipped model)")
    p.add_argument("--topologies", nargs="+", default=["Abilene", "sndlib:geant"])
    p.add_argument("--paths-strategy", default="shortest")
    p.add_argument("--synthetic-paths", nargs="*", default=[], help="topologies given replicated shortest paths")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--batches", nargs="*", type=int, default=[8, 32])
    p.add_argument("--threads", type=int, default=0, help="CPU provider intra-op threads (0: one per core)")
    p.add_argument("--layout", default="auto", choices=["auto", "dense", "csr", "bucketed"])
    p.add_argument("--compare-layout", default=None, choices=["dense", "csr", "bucketed"],
                   help="also build the head in this layout and time it alternately with the first (compare_*)")
    p.add_argument("--mlp-dtype", default="auto", choices=["auto", "float32", "float16"],
                   help="float type of the refinement MLP in the specialised head (auto: as the service picks)")
    p.add_argument("--compare-mlp-dtype", default=None, choices=["float32", "float16"],
                   help="also build the head with this MLP float type (and --compare-layout, else --layout) "
                        "and time it alternately with the first (compare_*)")
    p.add_argument("--skip-generic", action="store_true",
                   help="do not run the generic graph (slow on large topologies); checks then compare against the head")
    p.add_argument("--compare-without-cpu-pass", action="store_true",
                   help="CPU: also time the same head without the scalar-constant pass (graph_passes.py), alternating")
    p.add_argument("--check-tms", type=int, default=0, metavar="N",
                   help="with a compare head: MLU and split of both heads on N more TMs (gravity/bimodal/uniform, "
                        "a random link down, a random policy each), largest differences (compare_check_tms)")
    p.add_argument("--profile", type=int, default=0, metavar="RUNS",
                   help="CUDA: trace RUNS batch-one runs of each head with CUPTI (torch.profiler) and record "
                        "GPU time and launches per kernel group (profile_*)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    import onnx
    import onnxruntime as ort

    from tellm.inference.artifacts import DEFAULT_MODEL_PATH
    from tellm.inference.session import load_model
    from tellm.inference.specialise import FoldedWeights

    if a.provider == "cuda":
        ort.preload_dlls()
    model_path = a.model or DEFAULT_MODEL_PATH
    gen = load_model(model_path, provider=a.provider, threads=a.threads)
    weights = FoldedWeights.from_onnx(onnx.load(str(model_path)))
    spec = importlib.util.spec_from_file_location("bench_inference", Path(__file__).with_name("bench_inference.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    doc = {"benchmark": "generic vs specialised TE head, model only", "command": " ".join(sys.argv),
           "provider": gen.provider, "onnxruntime": ort.__version__, "cores": os.cpu_count(),
           "load_average_start": os.getloadavg(), "model_version": gen.version, "rows": []}

    for name in a.topologies:
        try:
            row = one_topology(name, a, gen, weights, bench.replicated_shortest_paths)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next topology
            row = {"topology": name, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(row), flush=True)
        doc["rows"].append(row)
        if a.out:
            a.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


def timed(fn, n: int) -> list[float]:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts


def one_topology(name: str, a, gen, weights, replicated_shortest_paths) -> dict:
    from tecore import compute_paths, generate, load_topology
    from tellm.inference.topology_head import TopologyHead

    topo = load_topology(name)
    paths = (replicated_shortest_paths(topo, 4) if name in a.synthetic_paths
             else compute_paths(topo, k=4, strategy=a.paths_strategy))
    arrays = register(topo, paths)
    tms = [tm.pair_demands(paths.pairs).astype(np.float32) for tm in generate(topo, "gravity", 2, seed=7)]
    up = np.ones(topo.num_links, np.float32)
    up[int(np.argmax(np.bincount(arrays.inc_link, minlength=topo.num_links)))] = 0.0  # busiest link down
    policy = np.float32([0.3, 0.2, 0, 0])
    static = {"capacity_bps": arrays.capacity_bps, "latency_seconds": arrays.latency_seconds,
              "path_pair": arrays.path_pair, "inc_path": arrays.inc_path, "inc_link": arrays.inc_link}

    def generic(d, u, pol):
        return gen.run_bound(arrays, static, {"demand_bps": d, "link_up": u, "policy": pol})

    d1, u1, p1 = tms[0][None], np.ones((1, topo.num_links), np.float32), np.zeros((1, 4), np.float32)
    t0 = time.perf_counter()
    if not a.skip_generic:
        generic(d1[0], u1[0], p1[0])
    generic_first = (time.perf_counter() - t0) * 1e3 if not a.skip_generic else None
    head = TopologyHead.build(weights, arrays, a.provider, threads=a.threads, layout=a.layout, mlp_dtype=a.mlp_dtype)
    t0 = time.perf_counter()
    head.run(d1, u1, p1)
    first = (time.perf_counter() - t0) * 1e3
    n = head.run(tms[1][None], up[None], policy[None])
    # The reference of the checks: the generic graph, or with --skip-generic the head itself.
    g = generic(tms[1], up, policy) if not a.skip_generic else {k: v[0] for k, v in n.items()}
    row = {"topology": name, "pairs": paths.num_pairs, "paths": paths.num_paths,
           "path_link_entries": int(paths.path_links.size), "paths_kind": paths.strategy, "layout": head.tables.layout,
           "k": head.tables.k, "h": head.tables.h, "tables_mb": head.tables.nbytes / 1e6,
           "build_s": head.build_seconds, "first_run_ms": first, "generic_first_run_ms": generic_first,
           "cuda_graph": head.graph_session is not None, "cuda_graph_batches": list(head.graph_batches),
           "mlp_dtype": head.mlp_dtype,
           "check_link_down_policy": check(arrays, g, {k: v[0] for k, v in n.items()})}
    other = None
    if a.compare_layout or a.compare_mlp_dtype or a.compare_without_cpu_pass:
        other = TopologyHead.build(weights, arrays, a.provider, threads=a.threads,
                                   layout=a.compare_layout or a.layout, mlp_dtype=a.compare_mlp_dtype or a.mlp_dtype,
                                   cpu_pass=not a.compare_without_cpu_pass)
        o = other.run(tms[1][None], up[None], policy[None])
        row.update(compare_layout=other.tables.layout, compare_mlp_dtype=other.mlp_dtype,
                   compare_cpu_pass=not a.compare_without_cpu_pass,
                   compare_build_s=other.build_seconds,
                   compare_tables_mb=other.tables.nbytes / 1e6,
                   compare_check_link_down_policy=check(arrays, g, {k: v[0] for k, v in o.items()}))
    if other is not None and a.check_tms:
        row["compare_check_tms"] = check_many(topo, paths, arrays, head, other, a.check_tms)
    runs = a.runs if paths.path_links.size < 20e6 else max(3, a.runs // 4)
    old, new, cmp = [], [], []
    for _ in range(runs):  # alternate: load on a shared machine hits all alike
        if not a.skip_generic:
            old += timed(lambda: generic(d1[0], u1[0], p1[0]), 1)
        new += timed(lambda: head.run(d1, u1, p1), 1)
        if other is not None:
            cmp += timed(lambda: other.run(d1, u1, p1), 1)
    row.update(specialised_ms=statistics.median(new), specialised_p99_ms=float(np.percentile(new, 99)))
    if old:
        row.update(generic_ms=statistics.median(old), generic_p99_ms=float(np.percentile(old, 99)))
    if other is not None:
        row["compare_ms"] = statistics.median(cmp)
    if head.graph_session is not None:
        with no_cuda_graph(head):
            row["specialised_no_cuda_graph_ms"] = statistics.median(timed(lambda: head.run(d1, u1, p1), runs))
    if a.profile and a.provider == "cuda":
        from gpu_kernel_profile import kernel_profile

        for key, h in (("profile", head), ("compare_profile", other)):
            if h is None:
                continue
            try:
                row[key] = kernel_profile(lambda: h.run(d1, u1, p1), runs=a.profile)
                with no_cuda_graph(h):
                    row[key + "_no_cuda_graph"] = kernel_profile(lambda: h.run(d1, u1, p1), runs=a.profile)
            except Exception as exc:  # noqa: BLE001 - the timings above stand without a profile
                row[key] = {"error": f"{type(exc).__name__}: {exc}"}
    for b in a.batches:
        if b * head.tables.num_pairs * head.tables.k > (1 << 23):
            continue
        db, ub, pb = (np.repeat(x, b, axis=0) for x in (d1, u1, p1))
        heads = {f"batch{b}_ms_per_tm": head, f"compare_batch{b}_ms_per_tm": other}
        heads = {key: h for key, h in heads.items() if h is not None}
        times: dict[str, list[float]] = {key: [] for key in heads}
        for h in heads.values():
            h.run(db, ub, pb)
        for _ in range(max(3, runs // 2)):  # alternate, as above
            for key, h in heads.items():
                times[key] += timed(lambda: h.run(db, ub, pb), 1)
        row.update({key: statistics.median(ts) / b for key, ts in times.items()})
        if head.graph_session is not None:  # the same batch without the captured graphs
            with no_cuda_graph(head):
                row[f"batch{b}_no_cuda_graph_ms_per_tm"] = statistics.median(
                    timed(lambda: head.run(db, ub, pb), max(3, runs // 2))) / b
    row["load_average"] = os.getloadavg()
    return row


def check_many(topo, paths, arrays, head, other, n: int) -> dict:
    """Both heads on ``n`` TMs with a random link down and policy each: the largest MLU (relative) and split
    differences, and whether every split of either head is valid."""
    from tecore import generate

    rng = np.random.default_rng(11)
    fams = ("gravity", "bimodal", "uniform")
    mlu_rel, split_abs, valid = [], [], True
    for i in range(n):
        tm = generate(topo, fams[i % 3], 1, seed=100 + i)[0].pair_demands(paths.pairs).astype(np.float32)
        up = np.ones(topo.num_links, np.float32)
        up[rng.integers(topo.num_links)] = 0.0
        pol = np.float32([rng.choice([0.0, 0.3]), rng.choice([0.0, 0.2]), 0, 0])
        x, y = ({k: v[0] for k, v in h.run(tm[None], up[None], pol[None]).items()} for h in (head, other))
        c = check(arrays, y, x)
        mlu_rel.append(c["mlu_rel_diff"])
        split_abs.append(c["max_split_diff"])
        valid = valid and c["split_valid"] and split_valid(arrays, y["split"])
    return {"tms": n, "max_mlu_rel_diff": float(max(mlu_rel)), "median_mlu_rel_diff": float(np.median(mlu_rel)),
            "max_split_diff": float(max(split_abs)), "all_valid": bool(valid)}


@contextlib.contextmanager
def no_cuda_graph(head):
    """Run a head through its plain session (no captured CUDA graph) inside the block."""
    saved, head.graph_session = head.graph_session, None
    try:
        yield
    finally:
        head.graph_session = saved


if __name__ == "__main__":
    raise SystemExit(main())
