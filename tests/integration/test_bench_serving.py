"""The serving benchmarks' own machinery against a real server: the load generator's client processes
(benchmarks/load_gen.py) and the per-request CPU profile's grouping (benchmarks/serve_cpu_profile.py)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from ..inference_support import RunningServer, demands, model_under_test, paths_for, ring_topology

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the spawned client processes import load_gen by name, as the scripts do
import load_gen  # noqa: E402
import serve_cpu_profile  # noqa: E402


@pytest.fixture
def served(tmp_path):
    path, _ = model_under_test(tmp_path)
    s = RunningServer(path, watch_interval_seconds=0, workers=8)
    topo = ring_topology(8)
    paths = paths_for(topo)
    handle = s.client.register_topology(topo, paths, topology_id="load")
    tms = [demands(paths, seed=i).astype("float32") for i in range(3)]
    try:
        yield s, handle, tms
    finally:
        s.stop()


def test_load_spread_over_client_processes_is_answered_and_counted(served):
    s, handle, tms = served
    level = load_gen.run_level(s.address, handle, tms, concurrency=4, max_requests=40, max_seconds=30,
                               timeout_seconds=30, processes=2, server_pid=os.getpid())
    assert level["client_processes"] == 2 and level["errors"] == 0, level["error_examples"]
    assert level["requests"] == 40  # two processes, 20 requests each
    assert 0 < level["p50_ms"] <= level["p99_ms"] and level["requests_per_second"] > 0
    # The clients ran in other processes: this process's CPU is the server's alone.
    assert level["server_cpu_ms_per_request"] > 0 and level["client_cpu_ms_per_request"] > 0

    one = load_gen.run_level(s.address, handle, tms, concurrency=3, max_requests=9, max_seconds=30,
                             timeout_seconds=30)
    assert one["client_processes"] == 1 and one["requests"] == 9 and "server_cpu_ms_per_request" not in one


def test_a_failing_client_process_fails_the_level(served):
    s, handle, tms = served
    closed = "127.0.0.1:1"  # nothing listens there: every client's first route fails at once
    with pytest.raises(RuntimeError, match="load-generator process failed"):
        load_gen.run_level(closed, handle, tms, concurrency=2, max_requests=4, max_seconds=5,
                           timeout_seconds=2, processes=2)


def test_profile_groups_and_thread_cpu():
    assert serve_cpu_profile.group_of("~:<built-in method onnxruntime.capi.onnxruntime_pybind11_state.run>") \
        == "model run (onnxruntime, GIL released)"
    assert serve_cpu_profile.group_of("/x/site-packages/grpc/_server.py:_serve").startswith("gRPC")
    assert serve_cpu_profile.group_of("/repo/inference/batcher.py:submit") == "batching and thread handoffs"
    assert serve_cpu_profile.group_of("/repo/inference/service.py:Route").startswith("Route handler")
    assert serve_cpu_profile.group_of("/lib/python3/json/decoder.py:decode") == "other"

    before = serve_cpu_profile.thread_cpu_seconds()
    done = threading.Event()

    def spin():
        x = 0
        while not done.is_set():
            x += 1

    t = threading.Thread(target=spin, name="spinner_7")
    t.start()
    threading.Event().wait(0.3)
    kinds = serve_cpu_profile.python_thread_kinds()
    after = serve_cpu_profile.thread_cpu_seconds()
    done.set()
    t.join()
    cpu = serve_cpu_profile.cpu_by_thread(before, after, kinds, requests=1)
    assert kinds[t.native_id] == "spinner" and cpu["spinner"] > 50  # ms of CPU in 0.3 s of spinning
