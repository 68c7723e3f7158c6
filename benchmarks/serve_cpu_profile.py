#!/usr/bin/env python3
"""Where a served request's CPU time goes: the inference server in this process under a per-thread
CPU-time profiler, loaded by ``bench_inference.py --address`` in client processes beside it.

Every thread of the server (gRPC's completion-queue loop, its handler threads, the batching leader,
the CUDA runner) gets a ``cProfile`` on ``time.thread_time``, so a thread waiting for the GIL or a
lock costs nothing and what is counted is CPU spent. Functions are grouped (gRPC's Python server,
the Route handler's decode/checks/encode, batching and thread handoffs, metrics, the model run inside
onnxruntime) and reported in CPU milliseconds per served request. Everything but the model run holds
the GIL, so ``1000 / gil_ms_per_request`` is the most requests per
second one server process can answer, however fast the GPU. Each thread's CPU from /proc is reported
beside it (no profiler overhead there). The profiler itself adds about a microsecond per Python call, so the
Python groups read high; the JSON keeps the top functions to check against.

    python benchmarks/serve_cpu_profile.py --provider cuda --topology sndlib:geant --concurrency 32 \
        --client-processes 4 --out benchmarks/results/serve_cpu_profile_geant.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (group, test on "file:function") in order; the first that matches wins.
GROUPS = (
    ("model run (onnxruntime, GIL released)", lambda f: "onnxruntime_pybind11_state" in f),
    ("model run glue (onnxruntime Python, io binding)", lambda f: "onnxruntime" in f or "/inference/session.py" in f
     or "/inference/topology_head.py" in f),
    # cProfile charges an idle handler thread's blocking get with about the model run's CPU again
    # (the threads' CPU from /proc has no such share): kept apart, out of every sum.
    ("idle handler threads' queue wait (profiler artefact)", lambda f: "SimpleQueue" in f),
    ("gRPC Python server (completion queue, call state)", lambda f: "/grpc/" in f or "select.poll" in f),
    ("batching and thread handoffs", lambda f: any(s in f for s in ("/inference/batcher.py", "/inference/fastpath.py",
                                                                       "threading.py", "concurrent/futures", "queue",
                                                                       "_thread.", "SimpleQueue"))),
    ("metrics (prometheus_client)", lambda f: "prometheus_client" in f or "/inference/metrics.py" in f),
    ("Route handler: decode, checks, encode", lambda f: any(s in f for s in ("/inference/", "/contract/", "numpy",
                                                                               "google/protobuf", "FromString",
                                                                               "SerializeToString", "MergeFromString"))),
)
REQUEST_THREADS = ("rpc", "Thread-", "tellm-cuda")  # threads on the request path (not head builds)


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            f = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(f[11]) + int(f[12])) / tick
    return out


def python_thread_kinds() -> dict[int, str]:
    """Native thread id -> the Python thread's name without its number ("rpc_3" -> "rpc")."""
    return {t.native_id: t.name.split(" ")[-1].strip("()").rstrip("0123456789_-") or t.name
            for t in threading.enumerate()}


def cpu_by_thread(before: dict[int, float], after: dict[int, float], names: dict[int, str],
                  requests: int) -> dict[str, float]:
    """CPU ms per request by thread kind: Python threads by name, the rest (threads of onnxruntime,
    gRPC core, CUDA) as native."""
    out: dict[str, float] = {}
    for tid, cpu in after.items():
        kind = names.get(tid, "native (onnxruntime, gRPC core, CUDA)")
        out[kind] = out.get(kind, 0.0) + 1e3 * (cpu - before.get(tid, 0.0)) / requests
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def group_of(key: str) -> str:
    return next((name for name, test in GROUPS if test(key)), "other")


class ThreadProfiles:
    """A CPU-time cProfile per thread started after ``install`` (and for the installing thread's
    later threads only: the caller's own thread is not profiled)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.profiles: list[tuple[str, cProfile.Profile]] = []

    def install(self) -> None:
        threading.setprofile(self._hook)

    def _hook(self, frame, event, arg) -> None:
        sys.setprofile(None)
        p = cProfile.Profile(time.thread_time)
        with self.lock:
            self.profiles.append((threading.current_thread().name, p))
        p.enable()

    def stats(self, names: tuple[str, ...]) -> tuple[pstats.Stats | None, list[str]]:
        with self.lock:
            chosen = [(n, p) for n, p in self.profiles if n.startswith(names)]
        st = None
        for _, p in chosen:
            p.create_stats()
            st = pstats.Stats(p) if st is None else st.add(p) or st
        return st, sorted({n.rstrip("0123456789_") for n, _ in chosen})


def summarise(st: pstats.Stats, requests: int, top: int = 25) -> dict:
    groups: dict[str, float] = {}
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, callers) in st.stats.items():
        key = f"{file}:{fn}"
        g = group_of(key)
        groups[g] = groups.get(g, 0.0) + tt
        rows.append((tt, nc, key if file != "~" else fn, g))
    rows.sort(reverse=True)
    per_req = {g: 1e3 * s / requests for g, s in sorted(groups.items(), key=lambda kv: -kv[1])}
    gil = sum(v for g, v in per_req.items() if "GIL released" not in g and "artefact" not in g)
    return {"cpu_ms_per_request": per_req, "gil_ms_per_request": gil,
            "requests_per_second_ceiling": 1e3 / gil if gil > 0 else None,
            "top_functions": [{"cpu_ms_per_request": 1e3 * tt / requests, "calls": nc, "function": k, "group": g}
                              for tt, nc, k, g in rows[:top]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "inference" / "models" / "tellm-te.onnx")
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--topology", default="sndlib:geant")
    p.add_argument("--paths-strategy", default="shortest")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--client-processes", type=int, default=4)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--workers", type=int, default=32, help="server gRPC handler threads")
    p.add_argument("--max-parallel-runs", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_cpu_profile.json")
    a = p.parse_args(argv)

    from tellm.commands.common import write_json
    from tellm.commands.serve import build_server
    from tellm.inference.server import ServerConfig

    profiles = ThreadProfiles()
    profiles.install()
    server = build_server(ServerConfig(model_path=a.model, host="127.0.0.1", port=0, metrics_port=None,
                                       workers=a.workers, max_parallel_runs=a.max_parallel_runs,
                                       provider=a.provider, watch_interval_seconds=0))
    port = server.start()
    with tempfile.TemporaryDirectory() as tmp:
        load_json = Path(tmp) / "load.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_inference.py"), "--address", f"127.0.0.1:{port}",
               "--topologies", a.topology, "--paths-strategy", a.paths_strategy, "--concurrency", str(a.concurrency),
               "--requests", str(a.requests), "--seconds", str(a.seconds), "--client-processes",
               str(a.client_processes), "--out", str(load_json)]
        t0, cpu0 = time.perf_counter(), thread_cpu_seconds()
        done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall, cpu1, kinds = time.perf_counter() - t0, thread_cpu_seconds(), python_thread_kinds()
        load = json.loads(load_json.read_text()) if load_json.exists() else None
    st, names = profiles.stats(REQUEST_THREADS)
    server.stop(grace_seconds=1.0)
    if done.returncode != 0 or load is None or st is None:
        print(f"the load generator failed (exit {done.returncode})", file=sys.stderr)
        return 1
    routes = sum(nc for (file, _, fn), (_, nc, *_r) in st.stats.items() if fn == "Route" and "service.py" in file)
    entry = load["topologies"][0]
    doc = {"benchmark": "served request CPU profile (cProfile on thread CPU time, every server thread)",
           "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
           "provider": entry.get("provider"), "layout": entry.get("layout"), "topology": a.topology,
           "pairs": entry["pairs"], "paths": entry["paths"], "cores": os.cpu_count(),
           "load_generator": load["load_generator"], "level_under_profiler": entry["levels"][-1],
           "route_calls_profiled": routes, "profiled_threads": names, "wall_seconds": wall,
           "thread_cpu_ms_per_request": cpu_by_thread(cpu0, cpu1, kinds, max(1, routes)),
           **summarise(st, max(1, routes))}
    write_json(a.out, doc)
    lv = doc["level_under_profiler"]
    print(f"{a.topology} on {doc['provider']} ({doc['layout']}), c = {a.concurrency}: {lv['requests_per_second']:.0f} "
          f"req/s under the profiler, {routes} Route calls profiled")
    for g, ms in doc["cpu_ms_per_request"].items():
        print(f"  {ms:7.3f} ms/request  {g}")
    for kind, ms in doc["thread_cpu_ms_per_request"].items():
        print(f"  {ms:7.3f} ms/request  CPU of {kind} threads (from /proc)")
    ceiling = doc["requests_per_second_ceiling"]
    print(f"  holding the GIL: {doc['gil_ms_per_request']:.3f} ms/request -> at most {ceiling:.0f} req/s per process")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
