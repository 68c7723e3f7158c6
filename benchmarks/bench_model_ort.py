#!/usr/bin/env python3
"""Model-only run time of the shipped TE head on ONNX Runtime (CUDA or CPU provider).

Loads the model exactly as ``tellm serve`` does (``tellm.inference.session.load_model``) and times,
per topology and one gravity TM:

- ``bound_ms``: the service's path (``LoadedModel.run_bound``): the per-topology inputs (capacities,
  latencies, path-pair map, incidence) stay on the device, a run copies demand/link_up/policy in and
  split/loads/MLU out. This is the model's share of a ``Route`` request.
- ``plain_ms``: ``session.run`` with every input from host memory (the whole incidence crosses PCIe
  on every run on CUDA).

Median of ``--runs`` runs (Kdl: ``--runs-large``) after 3 warm-up runs. With ``--profile`` it also
runs ONNX Runtime's profiler on the first topology and records which provider ran each node, so a
silent CPU fallback of an op shows up in the JSON. Run it on the GPU machine (see benchmarks/README.md):

    python benchmarks/bench_model_ort.py --provider cuda --profile --out model_ort_cuda.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STATIC = ("capacity_bps", "latency_seconds", "path_pair", "inc_path", "inc_link")


def timed_ms(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def profile_placement(model_path: Path, provider: str, feeds: dict) -> dict:
    """Which provider ran each node, and the kernel time per op type, over 2 profiled runs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    for _ in range(2):
        sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    nodes_by_provider: dict[str, set] = defaultdict(set)
    op_us: Counter = Counter()
    for e in events:
        a = e.get("args", {})
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and "provider" in a:
            nodes_by_provider[a["provider"]].add(e["name"])
            op_us[f"{a['provider']}:{a.get('op_name', '?')}"] += e.get("dur", 0)
    return {"nodes_per_provider": {k: len(v) for k, v in nodes_by_provider.items()},
            "kernel_us_per_op_over_2_runs": dict(op_us.most_common(25)),
            "note": "kernel_time events of the ORT profiler; CUDA kernels are timed as launched (host side)"}


def main(argv: list[str] | None = None) -> int:
    from tellm.inference.artifacts import DEFAULT_MODEL_PATH

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    p.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--topologies", nargs="+", default=["Abilene", "sndlib:geant", "zoo:Cogentco", "zoo:Kdl"])
    p.add_argument("--paths-strategy", default=None,
                   help="tecore path strategy (default: compute_paths' default; 'shortest' = hop-shortest k = 4)")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--runs-large", type=int, default=10, help="runs for topologies over 1M paths")
    p.add_argument("--profile", action="store_true", help="record op placement on the first topology")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model_ort_cuda.json")
    args = p.parse_args(argv)

    import onnxruntime as ort

    from tecore import compute_paths, generate, load_topology
    from tellm.contract.onnx_io import onnx_inputs
    from tellm.inference.session import load_model

    model = load_model(args.model, provider=args.provider)
    doc = {"benchmark": "TE head model-only run time on ONNX Runtime (no gRPC)",
           "command": " ".join(["benchmarks/bench_model_ort.py", *(argv if argv is not None else sys.argv[1:])]),
           "model": str(args.model), "model_sha256": model.sha256, "model_version": model.version,
           "provider": model.provider, "onnxruntime": ort.__version__, "device": _device_name(args.provider),
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "topologies": []}
    for i, name in enumerate(args.topologies):
        topo = load_topology(name)
        paths = compute_paths(topo, k=4, **({"strategy": args.paths_strategy} if args.paths_strategy else {}))
        tm = generate(topo, "gravity", 1, seed=1000)[0]
        feeds = onnx_inputs(topo, paths, tm)
        static = {k: feeds[k] for k in STATIC}
        dynamic = {k: v for k, v in feeds.items() if k not in STATIC}
        n = args.runs_large if paths.num_paths > 1e6 else args.runs
        key = _Key()  # run_bound caches the static inputs on the device per (weak-referenceable) key
        t0 = time.perf_counter()
        first = model.run_bound(key, static, dynamic)
        first_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(2):
            model.run_bound(key, static, dynamic)
        bound = timed_ms(lambda: model.run_bound(key, static, dynamic), n)
        plain = timed_ms(lambda: model.run(feeds), max(3, n // 3))
        rec = {"topology": name, "nodes": topo.num_nodes, "links": topo.num_links, "pairs": paths.num_pairs,
               "paths": paths.num_paths, "path_link_entries": int(paths.path_links.size), "runs": n,
               "first_run_ms_incl_static_upload": first_ms,
               "bound_ms": statistics.median(bound), "bound_min_ms": min(bound), "bound_max_ms": max(bound),
               "plain_ms": statistics.median(plain), "mlu": float(first["mlu"][0]),
               "split_sums_ok": bool(np.allclose(np.bincount(feeds["path_pair"], weights=first["split"]), 1.0,
                                                 atol=1e-3))}
        if args.provider == "cuda":
            # ORT's Python API exposes no peak device memory; nvidia-smi's in-use figure after the runs
            rec["gpu_memory_used_gib_after"] = _gpu_used_gib()
        if args.profile and i == 0:
            rec["profile"] = profile_placement(args.model, args.provider, feeds)
        print(json.dumps({k: v for k, v in rec.items() if k != "profile"}), flush=True)
        doc["topologies"].append(rec)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    doc["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


class _Key:
    """Stands for a registered topology in LoadedModel's per-topology cache."""


def _device_name(provider: str) -> str:
    if provider != "cuda":
        return "cpu"
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"


def _gpu_used_gib() -> float | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        return float(out.splitlines()[0]) / 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
