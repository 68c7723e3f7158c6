#!/usr/bin/env python3
"""Where the TE head's time goes on the GPU: ORT CUDA run time of several exported graphs on one topology
(rounds variants give the cost per round), and, under Nsight Compute (``--ncu``), one model's kernels.

Paths are Yen-sized stand-ins (each pair's hop-shortest path k times, bench_inference's
``replicated_shortest_paths``) so that the run needs no hour of path computation. Run on the GPU machine:

    python benchmarks/profile_head_gpu.py --topology zoo:Kdl --models new.onnx new_r0.onnx new_r1.onnx
    ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file ncu.csv \\
        python benchmarks/profile_head_gpu.py --topology zoo:Kdl --models new_r1.onnx --runs 1 --warmup 1
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--topology", default="zoo:Kdl")
    p.add_argument("--models", nargs="+", type=Path, required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    import onnxruntime as ort

    from tecore import generate, load_topology
    from tellm.contract.onnx_io import onnx_inputs

    spec = importlib.util.spec_from_file_location("bench_inference", Path(__file__).with_name("bench_inference.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ort.preload_dlls()
    topo = load_topology(a.topology)
    paths = bench.replicated_shortest_paths(topo, 4)
    x = onnx_inputs(topo, paths, generate(topo, "gravity", 1, seed=1000)[0])
    rows = []
    for m in a.models:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(m), sess_options=opts, providers=["CUDAExecutionProvider"])
        binding = sess.io_binding()
        for k, v in x.items():
            binding.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0))
        for o in ("split", "link_load_bps", "mlu"):
            binding.bind_output(o, "cuda")
        for _ in range(a.warmup):
            sess.run_with_iobinding(binding)
        ts = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            sess.run_with_iobinding(binding)
            mlu = binding.copy_outputs_to_cpu()[2]
            ts.append((time.perf_counter() - t0) * 1e3)
        row = {"model": m.name, "topology": a.topology, "paths": paths.num_paths,
               "path_link_entries": int(paths.path_links.size), "median_ms": statistics.median(ts),
               "min_ms": min(ts), "mlu": float(mlu[0])}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
