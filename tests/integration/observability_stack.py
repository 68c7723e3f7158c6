"""The observability test's stack: a real Prometheus on loopback scraping real tellm processes
(inference service, controller under Mininet, policy daemon), and the helpers that start, wait for and
drive them (tests/integration/test_observability_prometheus.py says what the test checks)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from tellm.mininet_scenarios import net as testbed_net
from tellm.mininet_scenarios.orchestrate import free_port

from .._observability import ROOT, exporter_jobs

SCRAPE_INTERVAL_SECONDS = 1
RATE_INTERVAL = "10s"  # Grafana: max(4 x scrape interval, step + scrape interval)
ANNOTATION_INTERVAL = "5s"
TOPOLOGY = ROOT / "deploy" / "topology-example.yaml"
JOBS = {exporter: job for exporter, (_, job) in exporter_jobs().items()}
POLICY_STATES = ROOT / "tests" / "fixtures" / "controller_states.json"
#: The daemon's timing: one replayed snapshot per poll, so the 30 recorded states play in ~15 s. The first
#: decision comes after 5 samples (rules' min_samples); a change stays watched for regressions for 10 s (the
#: bursty phase starts 7 polls after the first change) and the next change waits 2 s (4 polls), so the
#: engine's wishes right after a rollback are refused by the rate limit.
POLICY_POLL_SECONDS = 0.5
POLICY_MIN_CHANGE_INTERVAL_SECONDS = 2.0
POLICY_ROLLBACK_WINDOW_SECONDS = 10.0


def http_get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
        return r.read()


def wait_for(what: str, predicate, timeout_seconds: float, proc: "Proc | None" = None, interval: float = 0.25):
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}:\n"
                                 f"{proc.tail()}")
        try:
            if predicate():
                return
        except (OSError, ValueError):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_seconds:.0f} s waiting for {what}"
                         + (f"\n{proc.tail()}" if proc else ""))


def _subcommands() -> set[str]:
    from tellm.cli import build_parser

    parser = build_parser()
    return set(next(a for a in parser._actions if a.dest == "command").choices)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start_process(name: str, argv: list[str], tmp: Path, cleanup: contextlib.ExitStack) -> Proc:
    log = tmp / f"{name}.log"
    f = open(log, "w")
    cleanup.callback(f.close)
    p = Proc(name, subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=tmp), log)
    cleanup.callback(p.stop)
    return p


def tellm_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tellm.cli", *args]


@dataclass
class Stack:
    prometheus_url: str
    available: dict[str, str] = field(default_factory=dict)  # job -> "host:port" scraped
    unavailable: dict[str, str] = field(default_factory=dict)  # job -> reason
    start_time: float = 0.0
    policy_audit: Path | None = None  # the policy daemon's JSONL audit log, when it runs

    def query(self, expr: str) -> list[dict]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        doc = json.loads(http_get(url, timeout=10))
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        url = f"{self.prometheus_url}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)})
        doc = json.loads(http_get(url, timeout=10))
        assert doc["status"] == "success", doc
        return doc["data"]["result"]


# -------------------------------------------------------------------------------- metric sources
def inference_unavailable() -> str | None:
    if "serve" not in _subcommands():
        return "`tellm serve` (inference service) is not installed"
    try:
        import onnx  # noqa: F401  (the reference model is built with onnx.helper)

        from tellm.inference import reference_model  # noqa: F401
    except ImportError as exc:
        return f"cannot build the reference model for `tellm serve`: {exc}"
    return None


def controller_unavailable() -> str | None:
    if "controller" not in _subcommands():
        return "`tellm controller` is not installed"
    reason = testbed_net.mininet_unavailable()
    return None if reason is None else f"the controller source needs a Mininet network: {reason}"


def policy_unavailable(inference_reason: str | None) -> str | None:
    if "policy" not in _subcommands():
        return "`tellm policy` (policy daemon) is not installed: no process exports tellm_policy_*"
    if inference_reason is not None:  # its PolicyService lives in `tellm serve`
        return f"the policy daemon applies policies through `tellm serve`, which cannot run: {inference_reason}"
    return None


def metrics_text(port: int) -> str:
    return http_get(f"http://127.0.0.1:{port}/metrics").decode()


def start_prometheus(tmp: Path, targets: dict[str, str], cleanup: contextlib.ExitStack) -> str:
    port = free_port()
    cfg = {"global": {"scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                      "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s"},
           "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [t]}]} for job, t in targets.items()]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    proc = start_process("prometheus", ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--log.level=warn"], tmp, cleanup)
    url = f"http://127.0.0.1:{port}"
    wait_for("Prometheus /-/ready", lambda: http_get(f"{url}/-/ready") is not None, 30, proc)
    # Target discovery reaches the scrape loops a few seconds after start (Prometheus batches updates):
    # only from then on is every change of the sources recorded.
    wait_for("Prometheus scraping every target", lambda: len(json.loads(http_get(f"{url}/api/v1/query?query=up"))
                                                          ["data"]["result"]) == len(targets), 30, proc)
    return url


def start_policy_daemon(st: Stack, ports: dict[str, int], tmp: Path, cleanup: contextlib.ExitStack) -> Proc:
    """The rules daemon on replayed controller states, applying through the test's `tellm serve`."""
    grpc = f"127.0.0.1:{ports['inference_grpc']}"
    proc = start_process("policy", tellm_argv(
        "policy", "run", "--engine", "rules", "--replay", str(POLICY_STATES),
        "--policy-service", grpc, "--inference", grpc, "--audit", str(st.policy_audit),
        "--poll-interval", str(POLICY_POLL_SECONDS), "--decide-every", "1",
        "--min-change-interval", str(POLICY_MIN_CHANGE_INTERVAL_SECONDS),
        "--rollback-window", str(POLICY_ROLLBACK_WINDOW_SECONDS),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(ports["policy_metrics"])), tmp, cleanup)
    # Its first decision needs 5 polls (2.5 s): Prometheus (1 s scrapes) records the counters at 0
    # before they move, so increase() and the annotations see the events.
    wait_for("policy daemon /metrics", lambda: "tellm_policy_changes_total" in metrics_text(ports["policy_metrics"]),
          30, proc, interval=0.1)
    return proc


def wait_policy_events(st: Stack, proc: Proc) -> None:
    job = JOBS["policy"]
    wait_for("Prometheus recording a policy change, an automatic rollback and a refused action",
          lambda: all(st.query(e) for e in (
              f'tellm_policy_changes_total{{job="{job}"}} > 0',
              f'tellm_policy_rollbacks_total{{job="{job}",trigger="regression"}} > 0',
              f'tellm_policy_actions_rejected_total{{job="{job}",tool="apply_policy"}} > 0')),
          60, proc, interval=1)


def drive_inference(grpc_port: int, model: Path, tmp: Path, cleanup: contextlib.ExitStack) -> None:
    """Traffic of the test's own (independent of the controller): steady Route calls, one rejected
    request (so the error series exist), one hot reload of the model file."""
    from tecore import compute_paths, load_topology
    from tellm.contract.client import InferenceClient, InferenceRejected
    from tellm.inference.reference_model import main as write_model

    topo = load_topology(TOPOLOGY)
    paths = compute_paths(topo, k=4)
    client = InferenceClient(f"127.0.0.1:{grpc_port}", timeout_seconds=2.0)
    cleanup.callback(client.close)
    handle = client.register_topology(topo, paths)
    demand = np.full(paths.num_pairs, 1e6)
    with pytest.raises(InferenceRejected):
        client.route(handle, np.full(paths.num_pairs + 1, 1e6))  # wrong length: INVALID_ARGUMENT
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            with contextlib.suppress(Exception):
                client.route(handle, demand)
            stop.wait(0.2)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    cleanup.callback(t.join, 5)
    cleanup.callback(stop.set)
    # Hot reload: replace the file atomically, as an operator deploying a new model would.
    write_model([str(tmp / "model.next.onnx"), "--variant", "second"])
    os.replace(tmp / "model.next.onnx", model)
