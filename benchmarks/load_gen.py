"""Closed-loop gRPC load for the inference benchmarks: ``concurrency`` clients, each with one request
in flight, spread over one or more client processes.

One Python process decodes every reply under one GIL; at a few thousand requests per second that
process, not the server, sets the pace. With ``processes`` > 1 the clients are dealt out to that many
processes, which connect, warm up, wait at a common barrier and then send until the request or time
budget of the level is spent.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import numpy as np


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or None where /proc lacks it."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _send(address: str, handle, tms: list[np.ndarray], threads: int, max_requests: int, max_seconds: float,
          timeout_seconds: float, ready) -> dict:
    """``threads`` clients of one process; ``ready()`` blocks until every process is connected."""
    from tellm.contract.client import InferenceClient

    clients = [InferenceClient(address, timeout_seconds=timeout_seconds, retries=0) for _ in range(threads)]
    for c in clients:  # connect before timing
        c.route(handle, tms[0])
    latencies: list[float] = []
    server_seconds: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = [0]
    barrier = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        client = clients[i]
        barrier.wait()
        while True:
            with lock:
                if issued[0] >= max_requests or time.perf_counter() > stop_at[0]:
                    return
                n = issued[0]
                issued[0] += 1
            tm = tms[n % len(tms)]
            t0 = time.perf_counter()
            try:
                reply = client.route(handle, tm)
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                server_seconds.append(reply.server_seconds)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    ready()
    start, cpu0 = time.time(), time.process_time()
    stop_at[0] = time.perf_counter() + max_seconds
    barrier.wait()
    for t in pool:
        t.join()
    end, cpu = time.time(), time.process_time() - cpu0
    for c in clients:
        c.close()
    return {"latencies": latencies, "server_seconds": server_seconds, "errors": errors, "start": start, "end": end,
            "cpu_seconds": cpu}


def _process_main(queue, barrier, *args) -> None:
    try:
        queue.put(_send(*args, ready=barrier.wait))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the level
        barrier.abort()
        queue.put({"failed": f"{type(exc).__name__}: {exc}"})


def percentiles_ms(seconds: list[float]) -> dict:
    a = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def run_level(address: str, handle, tms: list[np.ndarray], concurrency: int, max_requests: int,
              max_seconds: float, timeout_seconds: float, processes: int = 1, server_pid: int | None = None) -> dict:
    """One load level; returns latency percentiles, requests/s, the load generator's CPU milliseconds
    per answered request and, given ``server_pid``, the server's."""
    processes = max(1, min(processes, concurrency))
    threads = [len(part) for part in np.array_split(np.arange(concurrency), processes)]
    budgets = [max(1, max_requests * t // concurrency) for t in threads]
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    if processes == 1:
        parts = [_send(address, handle, tms, concurrency, max_requests, max_seconds, timeout_seconds, lambda: None)]
    else:
        ctx = mp.get_context("spawn")
        queue, barrier = ctx.Queue(), ctx.Barrier(processes)
        procs = [ctx.Process(target=_process_main, daemon=True,
                             args=(queue, barrier, address, handle, tms, t, b, max_seconds, timeout_seconds))
                 for t, b in zip(threads, budgets)]
        for p in procs:
            p.start()
        parts = [queue.get(timeout=max_seconds + timeout_seconds + 120) for _ in procs]
        for p in procs:
            p.join(30)
        failed = [p["failed"] for p in parts if "failed" in p]
        if failed:
            raise RuntimeError(f"a load-generator process failed: {failed[0]}")
    cpu1 = cpu_seconds(server_pid) if server_pid else None
    latencies = [x for p in parts for x in p["latencies"]]
    server_seconds = [x for p in parts for x in p["server_seconds"]]
    errors = [x for p in parts for x in p["errors"]]
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    out = {"concurrency": concurrency, "client_processes": processes, "requests": len(latencies),
           "errors": len(errors), "error_examples": sorted(set(errors))[:3], "wall_seconds": wall,
           "requests_per_second": len(latencies) / wall if wall > 0 else 0.0}
    if latencies:
        out.update(percentiles_ms(latencies))
        out["server_p50_ms"] = float(np.percentile(server_seconds, 50) * 1e3)
        out["server_p99_ms"] = float(np.percentile(server_seconds, 99) * 1e3)
        # The load generator's own CPU (all its processes), to tell a client-bound level from a server-bound one.
        out["client_cpu_ms_per_request"] = sum(p["cpu_seconds"] for p in parts) * 1e3 / len(latencies)
        if cpu0 is not None and cpu1 is not None:
            # Includes the warm-up routes of the level's clients (one each), so slightly high.
            out["server_cpu_ms_per_request"] = (cpu1 - cpu0) * 1e3 / (len(latencies) + concurrency)
    return out
