#!/usr/bin/env python3
"""End-to-end gRPC latency and throughput of the tellm inference service.

Starts ``tellm serve`` as a subprocess (or targets ``--address``), registers each topology with its
k=4 shortest candidate paths, then sends gravity traffic matrices from 1, 8 and 32 concurrent
client threads (one InferenceClient each) and records, per request, the client-side wall time of
``InferenceClient.route`` (request encoding, gRPC round trip over loopback, server decode, model
run, reply encoding, client decode). Writes a JSON file with p50/p90/p99 latency, requests/s and
the server's own handling time.

    nice -n 10 python benchmarks/bench_inference.py --model reference \
        --out benchmarks/results/inference_cpu.json

``--model reference`` builds the equal-split reference ONNX model (same interface as the trained
head); pass the trained head's path to benchmark it. Kdl's paths take minutes the first time and
are cached (TELLM_CACHE_DIR, default ~/.cache/tellm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from load_gen import run_level

ROOT = Path(__file__).resolve().parents[1]
LISTEN = re.compile(r"listening on (\S+):(\d+) metrics_port=(\S+) provider=(\S+) model_version=(\S+)")


def start_server(model: Path, provider: str, workers: int, ort_threads: int,
                 parallel_runs: int, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str, str]:
    cmd = [sys.executable, "-c", "import sys; from tellm.cli import main; sys.exit(main())", "serve",
           "--model", str(model), "--port", "0", "--metrics-port", "-1", "--provider", provider,
           "--workers", str(workers), "--ort-threads", str(ort_threads), "--max-parallel-runs", str(parallel_runs),
           "--watch-interval", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    m = LISTEN.search(line)
    if not m:
        proc.kill()
        raise SystemExit(f"tellm serve did not start: {line!r}")
    return proc, f"127.0.0.1:{m.group(2)}", m.group(4)


def replicated_shortest_paths(topo, k: int):
    """A path set with Yen's sizes but none of its cost: each pair's hop-count shortest path, k times.

    For --synthetic-paths: the service's cost depends only on the sizes (pairs, paths, path-link
    entries), and Yen's k=4 paths for Kdl take ~1 CPU-hour to compute. Mean hops are a little lower
    than Yen's (alternates are longer), so path-link entries are a little fewer; the JSON records both.
    """
    import scipy.sparse as sp
    from scipy.sparse.csgraph import shortest_path

    from tecore import PathSet

    n = topo.num_nodes
    adj = sp.csr_matrix((np.ones(topo.num_links), (topo.src, topo.dst)), shape=(n, n))
    dist, pred = shortest_path(adj, unweighted=True, return_predecessors=True)
    link_of = np.full((n, n), -1, dtype=np.int64)
    link_of[topo.src, topo.dst] = np.arange(topo.num_links)
    pairs, lengths, chunks = [], [], []
    for s in range(n):
        d = np.flatnonzero(np.isfinite(dist[s]) & (np.arange(n) != s))
        hops = dist[s, d].astype(np.int64)
        entries = np.full((d.shape[0], int(hops.max())), -1, dtype=np.int64)
        cur = d.copy()
        for h in range(entries.shape[1]):  # walk back from every destination at once
            active = cur != s
            if not active.any():
                break
            prev = pred[s, cur]
            rows = np.flatnonzero(active)
            entries[rows, hops[rows] - 1 - h] = link_of[prev[rows], cur[rows]]
            cur = np.where(active, prev, cur)
        flat = entries[entries >= 0]  # row-major: each path's links in order
        pairs.append(np.stack([np.full(d.shape[0], s), d], axis=1))
        lengths.append(np.repeat(hops, k))
        per_path = np.split(flat, np.cumsum(hops)[:-1])
        chunks.append(np.concatenate([np.tile(p, k) for p in per_path]))
    pairs_arr = np.concatenate(pairs)
    path_lengths = np.concatenate(lengths)
    return PathSet(topology_hash=topo.content_hash, num_nodes=n, num_links=topo.num_links, pairs=pairs_arr,
                   pair_ptr=np.arange(0, k * pairs_arr.shape[0] + 1, k),
                   path_ptr=np.concatenate([[0], np.cumsum(path_lengths)]), path_links=np.concatenate(chunks),
                   strategy=f"replicated-shortest-x{k}", k=k)


def wait_for_graph(client: InferenceClient, topology_id: str, timeout_seconds: float) -> dict:
    """Wait until no specialised graph of the topology is being built (GetModelInfo); which graph serves."""
    t0 = time.perf_counter()
    while True:
        g = next((g for g in client.model_info().topology_graphs if g.topology_id == topology_id), None)
        if g is None or not g.building or time.perf_counter() - t0 > timeout_seconds:
            break
        time.sleep(0.1)
    return {"graph_ready_seconds": time.perf_counter() - t0, "layout": g.layout if g else "unknown",
            "provider": g.provider if g else "unknown", "build_seconds": g.build_seconds if g else 0.0}


def markdown_table(files: list[Path]) -> str:
    """The README table for result files written by this script."""
    rows = ["| topology | pairs / paths / path-link entries | provider | concurrency | requests | p50 ms | p99 ms "
            "| req/s | server p50 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for f in files:
        doc = json.loads(Path(f).read_text())
        for t in doc["topologies"]:
            size = f"{t['pairs']:,} / {t['paths']:,} / {t['path_link_entries']:,}"
            if "synthetic" in t.get("paths_kind", ""):
                size += " (synthetic paths)"
            for lv in t["levels"]:
                rows.append(f"| {t['topology']} | {size} | {doc['provider']} | {lv['concurrency']} | {lv['requests']} "
                            f"| {lv.get('p50_ms', float('nan')):.2f} | {lv.get('p99_ms', float('nan')):.2f} "
                            f"| {lv['requests_per_second']:.1f} | {lv.get('server_p50_ms', float('nan')):.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="reference",
                   help="ONNX model path, or 'reference' for the equal-split reference model")
    p.add_argument("--topologies", nargs="+", default=["Abilene", "geant", "Cogentco", "Kdl"])
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=500, help="max requests per (topology, concurrency)")
    p.add_argument("--seconds", type=float, default=20.0, help="max seconds per (topology, concurrency)")
    p.add_argument("--tms", type=int, default=8, help="distinct gravity TMs cycled through")
    p.add_argument("--k", type=int, default=4, help="candidate paths per pair")
    p.add_argument("--paths-strategy", default=None,
                   help="tecore path strategy (default: compute_paths' default; 'shortest' = hop-shortest)")
    p.add_argument("--synthetic-paths", nargs="*", default=[], metavar="TOPOLOGY",
                   help="for these topologies use each pair's shortest path repeated k times (Yen's sizes, "
                        "none of its hour-long computation) instead of the cached k-shortest paths")
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int, default=32, help="server gRPC handler threads")
    p.add_argument("--ort-threads", type=int, default=0, help="server onnxruntime intra-op threads (0 = default)")
    p.add_argument("--max-parallel-runs", type=int, default=4, help="server model runs at once")
    p.add_argument("--serve-args", default="", help="more `tellm serve` options, e.g. '--no-specialise'")
    p.add_argument("--timeout", type=float, default=30.0, help="client deadline per request, seconds")
    p.add_argument("--client-processes", type=int, default=1,
                   help="spread each level's clients over this many load-generator processes (one Python "
                        "process caps out at a few thousand requests/s)")
    p.add_argument("--address", default=None, help="benchmark a running server instead of starting one")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference_cpu.json")
    p.add_argument("--table", nargs="+", type=Path, metavar="JSON",
                   help="only print the markdown table of these result files")
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(args.table))
        return 0

    import onnxruntime as ort

    from tecore import compute_paths, generate, load_topology
    from tellm.contract.client import InferenceClient

    tmpdir = tempfile.TemporaryDirectory()
    if args.model == "reference":
        # Server-side setup: the benchmark itself talks to the model only through the contract's client.
        model = Path(tmpdir.name) / "reference.onnx"
        subprocess.run([sys.executable, "-m", "tellm.inference.reference_model", str(model)], check=True,
                       stdout=subprocess.DEVNULL)
    else:
        model = Path(args.model)
    proc = None
    if args.address:
        address, provider = args.address, "unknown"
    else:
        proc, address, provider = start_server(model, args.provider, args.workers, args.ort_threads,
                                               args.max_parallel_runs, tuple(args.serve_args.split()))
    doc = {
        "benchmark": "tellm inference end-to-end gRPC latency (InferenceClient.route over loopback)",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "model": "equal-split reference model (tellm.inference.reference_model)" if args.model == "reference"
                 else str(model),
        "provider": provider, "onnxruntime": ort.__version__,
        "host": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "server": {"serve_args": args.serve_args, "workers": args.workers, "ort_threads": args.ort_threads,
                   "max_parallel_runs": args.max_parallel_runs},
        "load_generator": (f"{args.client_processes} Python process(es) (clients dealt out evenly), one thread "
                           "and one gRPC channel per concurrent client"),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "topologies": [],
    }
    try:
        admin = InferenceClient(address, timeout_seconds=args.timeout, retries=2, register_timeout_seconds=600)
        doc["model_version"] = admin.model_info().version
        for name in args.topologies:
            topo = load_topology(name)
            t0 = time.perf_counter()
            synthetic = name in args.synthetic_paths
            if synthetic:
                paths = replicated_shortest_paths(topo, args.k)
            else:
                paths = compute_paths(topo, k=args.k, progress=sys.stderr.isatty(),
                                      **({"strategy": args.paths_strategy} if args.paths_strategy else {}))
            path_seconds = time.perf_counter() - t0
            tms = [tm.pair_demands(paths.pairs).astype(np.float32)
                   for tm in generate(topo, "gravity", args.tms, seed=1)]
            t0 = time.perf_counter()
            handle = admin.register_topology(topo, paths, topology_id=f"bench-{name}")
            register_seconds = time.perf_counter() - t0
            entry = {"topology": name, "nodes": topo.num_nodes, "links": topo.num_links, "pairs": paths.num_pairs,
                     "paths": paths.num_paths, "path_link_entries": int(paths.path_links.shape[0]),
                     "paths_kind": paths.strategy + (" (synthetic: sizes only)" if synthetic else ""),
                     "paths_seconds": path_seconds, "register_seconds": register_seconds,
                     "request_bytes": 4 * paths.num_pairs, "reply_bytes": 4 * (paths.num_paths + topo.num_links),
                     "levels": []}
            doc["topologies"].append(entry)
            print(f"{name}: {topo.num_nodes} nodes, {topo.num_links} links, {paths.num_pairs} pairs, "
                  f"{paths.num_paths} paths; registered in {register_seconds:.2f} s", flush=True)
            t0 = time.perf_counter()
            admin.route(handle, tms[0])  # the first TM after registration (the generic graph while a head builds)
            entry["first_route_ms"] = (time.perf_counter() - t0) * 1e3
            entry.update(wait_for_graph(admin, handle.topology_id, args.timeout + 600))
            print(f"  served by the {entry['layout']} graph on {entry['provider']} after "
                  f"{entry['graph_ready_seconds']:.2f} s (build {entry['build_seconds']:.2f} s)", flush=True)
            for i in range(5):  # warm-up: first runs allocate the session's buffers
                admin.route(handle, tms[0])
            for c in args.concurrency:
                level = run_level(address, handle, tms, c, args.requests, args.seconds, args.timeout,
                                  args.client_processes, proc.pid if proc is not None else None)
                entry["levels"].append(level)
                nan = float("nan")
                print(f"  concurrency {c:>2}: {level['requests']:>4} requests, p50 {level.get('p50_ms', nan):8.2f} ms, "
                      f"p99 {level.get('p99_ms', nan):8.2f} ms, {level['requests_per_second']:8.1f} req/s, "
                      f"server p50 {level.get('server_p50_ms', nan):7.2f} ms, server CPU "
                      f"{level.get('server_cpu_ms_per_request', nan):6.2f} ms/request, client CPU "
                      f"{level.get('client_cpu_ms_per_request', nan):5.2f} ms/request, errors {level['errors']}",
                      flush=True)
                # Partial results survive a run cut short (the GPU machine's calls have a time limit).
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(doc, indent=2) + "\n")
        admin.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        tmpdir.cleanup()
    doc["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
