#!/usr/bin/env python3
"""Where a run of the specialised TE head spends its time on the CPU provider: ONNX Runtime's own
profiler over a few runs, node kernel time by operator type and by (operator, output shape).

The head is built as the service builds it for the CPU (``build_tables`` with ``provider="cpu"``,
``topology_head.head_graph``, ``cpu_session_options``), one gravity TM, batch one. The profiler adds its own
cost per node, so a profiled run is slower than a plain one; both are reported.

    python benchmarks/cpu_node_profile.py --topology sndlib:geant --threads 2 \
        --out benchmarks/results/head_geant_cpu_profile.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def node_times(events: list[dict], runs: int) -> tuple[dict, dict, int]:
    """Per-run kernel ms by op type ({op: (ms, nodes)}), by (op, output shape), and nodes per run."""
    by_op: dict = collections.defaultdict(lambda: [0.0, 0])
    by_shape: dict = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        op = e["args"]["op_name"]
        shape = json.dumps(e["args"].get("output_type_shape"), separators=(",", ":"))[:80]
        for table, key in ((by_op, op), (by_shape, f"{op} {shape}")):
            table[key][0] += e["dur"] / 1e3 / runs
            table[key][1] += 1
    nodes = sum(n for _, n in by_op.values()) // runs

    def per_run(table):
        return {k: {"ms": ms, "nodes": n // runs}
                for k, (ms, n) in sorted(table.items(), key=lambda kv: -kv[1][0])}
    return per_run(by_op), per_run(by_shape), nodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "inference" / "models" / "tellm-te.onnx")
    p.add_argument("--topology", default="sndlib:geant")
    p.add_argument("--synthetic-paths", action="store_true", help="each pair's shortest path k times (Yen's sizes)")
    p.add_argument("--layout", default="auto", choices=["auto", "dense", "csr", "bucketed"])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (0: one per core)")
    p.add_argument("--runs", type=int, default=10, help="timed runs, plain and profiled")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before each")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    import onnx
    import onnxruntime as ort

    from tecore import compute_paths, generate, load_topology
    from tellm.commands.common import write_json
    from tellm.contract.onnx_io import onnx_inputs
    from tellm.inference.specialise import FoldedWeights
    from tellm.inference.specialise_tables import build_tables
    from tellm.inference.topology_head import cpu_session_options, head_graph

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_inference import replicated_shortest_paths

    topo = load_topology(a.topology)
    paths = replicated_shortest_paths(topo, 4) if a.synthetic_paths else compute_paths(topo, k=4, strategy="shortest")
    x = onnx_inputs(topo, paths, generate(topo, "gravity", 1, seed=1)[0])
    tables = build_tables(x["capacity_bps"], x["latency_seconds"], x["path_pair"], x["inc_path"], x["inc_link"],
                          paths.num_pairs, a.layout, provider="cpu")
    data = head_graph(FoldedWeights.from_onnx(onnx.load(str(a.model))), tables, "float32", "cpu")
    graph = onnx.load_from_string(data)
    feeds = {**tables.arrays, "demand_bps": x["demand_bps"][None], "link_up": x["link_up"][None],
             "policy": x["policy"][None]}

    def timed(session, runs):
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feeds)
            out.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(out))

    plain = ort.InferenceSession(data, cpu_session_options(a.threads), providers=["CPUExecutionProvider"])
    timed(plain, a.warmup)
    plain_ms = timed(plain, a.runs)
    with tempfile.TemporaryDirectory() as tmp:
        opts = cpu_session_options(a.threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        prof = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        timed(prof, a.warmup)
        profiled_ms = timed(prof, a.runs)
        events = json.loads(Path(prof.end_profiling()).read_text())
    by_op, by_shape, nodes = node_times(events, a.runs + a.warmup)
    kernel_ms = sum(v["ms"] for v in by_op.values())
    doc = {"benchmark": "specialised TE head, ORT CPU node profile",
           "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
           "onnxruntime": ort.__version__, "cores": os.cpu_count(), "load_average": os.getloadavg(),
           "topology": a.topology, "pairs": paths.num_pairs, "paths": paths.num_paths,
           "path_link_entries": int(paths.path_links.shape[0]), "layout": tables.layout, "threads": a.threads,
           "graph_nodes": len(graph.graph.node), "nodes_per_run": nodes, "median_run_ms": plain_ms,
           "median_profiled_run_ms": profiled_ms, "kernel_ms_per_run": kernel_ms,
           "by_op": by_op, "by_op_and_shape": dict(list(by_shape.items())[:30])}
    print(f"{a.topology} ({tables.layout}, {a.threads} threads): {plain_ms:.1f} ms per run, {profiled_ms:.1f} ms "
          f"profiled; {kernel_ms:.1f} ms in {nodes} node kernels")
    for op, v in list(by_op.items())[:12]:
        print(f"  {op:18s} {v['ms']:8.2f} ms  {v['nodes']:5d} nodes")
    if a.out:
        write_json(a.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
