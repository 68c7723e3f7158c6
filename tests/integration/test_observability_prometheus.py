"""Every PromQL expression of every Grafana dashboard returns data from a REAL Prometheus server
(Debian's `prometheus`, started here on loopback) scraping REAL tellm processes:

- `tellm serve` (inference) with the equal-split reference model, driven by the test's own client
  (good requests, one bad request, one hot model reload) and by the controller;
- `tellm controller` (router `model`) with a real Mininet network (deploy/topology-example.yaml: a
  triangle of Open vSwitch bridges, userspace datapath) carrying UDP traffic. The controller starts
  before the inference service, so its first loops fall back (tellm_fallback_total{reason="unavailable"}),
  then it routes with the model — the normal life of a deployment, shown on the dashboards;
- `tellm policy run` (rules engine) replaying recorded controller states (tests/fixtures/controller_states.json:
  calm, then bursty, then congested) and applying policies through the PolicyService of that `tellm serve`,
  under guardrails tight enough to act within seconds: it applies policies, rolls one back automatically
  when the replayed MLU jumps right after the change, and has applies refused by its rate limit.

The test is generic over the metric sources available: a source that cannot run here (its code not
installed, not root, no Open vSwitch) is left out and every query that reads its job is skipped with
the reason.
Grafana's interval macros are substituted as Grafana would ($__rate_interval -> 10s with 1 s scrapes).
Takes about a minute (most of it waiting for rate windows to fill; the policy daemon runs meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
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
from tellm.mininet_scenarios.orchestrate import free_port as _free_port
from tellm.mininet_scenarios.scenarios import from_yaml
from tellm.mininet_scenarios.udpflows import start_udp

from .._observability import ROOT, Query, dashboard_queries, exporter_jobs, jobs, substitute_grafana_macros

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


def _http_get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
        return r.read()


def _wait(what: str, predicate, timeout_seconds: float, proc: "_Proc | None" = None, interval: float = 0.25):
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
class _Proc:
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


def _start(name: str, argv: list[str], tmp: Path, cleanup: contextlib.ExitStack) -> _Proc:
    log = tmp / f"{name}.log"
    f = open(log, "w")
    cleanup.callback(f.close)
    p = _Proc(name, subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=tmp), log)
    cleanup.callback(p.stop)
    return p


def _tellm(*args: str) -> list[str]:
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
        doc = json.loads(_http_get(url, timeout=10))
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        url = f"{self.prometheus_url}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)})
        doc = json.loads(_http_get(url, timeout=10))
        assert doc["status"] == "success", doc
        return doc["data"]["result"]


# -------------------------------------------------------------------------------- metric sources
def _inference_unavailable() -> str | None:
    if "serve" not in _subcommands():
        return "`tellm serve` (inference service) is not installed"
    try:
        import onnx  # noqa: F401  (the reference model is built with onnx.helper)

        from tellm.inference import reference_model  # noqa: F401
    except ImportError as exc:
        return f"cannot build the reference model for `tellm serve`: {exc}"
    return None


def _controller_unavailable() -> str | None:
    if "controller" not in _subcommands():
        return "`tellm controller` is not installed"
    reason = testbed_net.mininet_unavailable()
    return None if reason is None else f"the controller source needs a Mininet network: {reason}"


def _policy_unavailable(inference_reason: str | None) -> str | None:
    if "policy" not in _subcommands():
        return "`tellm policy` (policy daemon) is not installed: no process exports tellm_policy_*"
    if inference_reason is not None:  # its PolicyService lives in `tellm serve`
        return f"the policy daemon applies policies through `tellm serve`, which cannot run: {inference_reason}"
    return None


def _metrics_text(port: int) -> str:
    return _http_get(f"http://127.0.0.1:{port}/metrics").decode()


def _start_prometheus(tmp: Path, targets: dict[str, str], cleanup: contextlib.ExitStack) -> str:
    port = _free_port()
    cfg = {"global": {"scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                      "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s"},
           "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [t]}]} for job, t in targets.items()]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    proc = _start("prometheus", ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--log.level=warn"], tmp, cleanup)
    url = f"http://127.0.0.1:{port}"
    _wait("Prometheus /-/ready", lambda: _http_get(f"{url}/-/ready") is not None, 30, proc)
    # Target discovery reaches the scrape loops a few seconds after start (Prometheus batches updates):
    # only from then on is every change of the sources recorded.
    _wait("Prometheus scraping every target", lambda: len(json.loads(_http_get(f"{url}/api/v1/query?query=up"))
                                                          ["data"]["result"]) == len(targets), 30, proc)
    return url


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    if shutil.which("prometheus") is None:
        pytest.skip("Prometheus is not installed (Debian package prometheus)")
    tmp = tmp_path_factory.mktemp("observability")
    # With -m "not mininet" no selected test reads the controller: do not build a network for nothing.
    wants_network = any(item.get_closest_marker("mininet") for item in request.session.items
                        if item.module is request.module)
    cleanup = contextlib.ExitStack()
    with cleanup:
        inference_reason = _inference_unavailable()
        reasons = {JOBS["inference"]: inference_reason,
                   JOBS["controller"]: _controller_unavailable() if wants_network else
                   "deselected: no selected test is marked mininet",
                   JOBS["policy"]: _policy_unavailable(inference_reason)}
        ports = {"inference_grpc": _free_port(), "inference_metrics": _free_port(), "controller_metrics": _free_port(),
                 "controller_api": _free_port(), "of": _free_port(), "policy_metrics": _free_port()}
        targets = {}
        if reasons[JOBS["inference"]] is None:
            targets[JOBS["inference"]] = f"127.0.0.1:{ports['inference_metrics']}"
        if reasons[JOBS["controller"]] is None:
            targets[JOBS["controller"]] = f"127.0.0.1:{ports['controller_metrics']}"
        if reasons[JOBS["policy"]] is None:
            targets[JOBS["policy"]] = f"127.0.0.1:{ports['policy_metrics']}"
        if not targets:
            pytest.skip("no tellm metric source can run here: " + "; ".join(f"{j}: {r}" for j, r in reasons.items()))
        st = Stack(_start_prometheus(tmp, targets, cleanup), dict(targets),
                   {j: r for j, r in reasons.items() if r is not None}, time.time())

        controller = None
        if JOBS["controller"] in targets:
            try:
                cleanup.enter_context(testbed_net.mininet_lock(timeout_seconds=300))
            except testbed_net.TestbedError as exc:  # another experiment holds the machine's switches
                pytest.skip(str(exc))
            testbed_net.ensure_ovs()
            # Before the inference service exists: the first routed loops fall back (and say so).
            controller = _start("controller", _tellm(
                "controller", "--topology", str(TOPOLOGY), "--router", "model",
                "--inference", f"127.0.0.1:{ports['inference_grpc']}", "--inference-timeout", "0.5",
                "--of-port", str(ports["of"]), "--poll-interval", "1",
                "--metrics-port", str(ports["controller_metrics"]), "--api-port", str(ports["controller_api"])),
                tmp, cleanup)
            _wait("controller /metrics", lambda: "tellm_mlu_ratio" in _metrics_text(ports["controller_metrics"]),
                  60, controller)
            testbed = testbed_net.Testbed.start(from_yaml(TOPOLOGY), of_port=ports["of"])  # hosts h<dpid>x1
            cleanup.callback(testbed.stop)
            hosts = [testbed.host(name) for name in testbed.host_names()]
            _wait("a fallback while inference is down",
                  lambda: 'tellm_fallback_total{reason="unavailable"}' in _metrics_text(ports["controller_metrics"]),
                  45, controller)
            for a in hosts:  # the controller learns hosts from their packets (proxy ARP)
                for b in hosts:
                    if a is not b:
                        a.cmd(f"ping -c1 -W1 {b.IP()}")
            # Two demands into the third switch: shortest paths put 8 Mbit/s on one 10 Mbit/s link.
            # 32 flows each (dp_hash needs many to split), until the cleanup kills them.
            senders = [start_udp(hosts[0], hosts[2].IP(), 8e6, 3600, 32),
                       start_udp(hosts[1], hosts[2].IP(), 4e6, 3600, 32)]
            for s in senders:
                cleanup.callback(lambda p=s: (p.kill(), p.wait()))

        if JOBS["inference"] in targets:
            from tellm.inference.reference_model import main as write_model

            model = tmp / "model.onnx"
            write_model([str(model), "--variant", "first"])
            server = _start("inference", _tellm(
                "serve", "--host", "127.0.0.1", "--port", str(ports["inference_grpc"]),
                "--metrics-port", str(ports["inference_metrics"]), "--model", str(model),
                "--watch-interval", "0.5", "--workers", "4", "--ort-threads", "1"), tmp, cleanup)
            _wait("inference /metrics", lambda: "tellm_model_info{" in _metrics_text(ports["inference_metrics"]),
                  60, server)
            _wait("Prometheus recording the first model load", lambda: st.query(
                f'tellm_inference_model_reloads_total{{job="{JOBS["inference"]}",result="success"}} == 1'), 30, server)
            _drive_inference(ports["inference_grpc"], model, tmp, cleanup)
            if JOBS["policy"] in targets:
                st.policy_audit = tmp / "policy-audit.jsonl"
                policy = _start_policy_daemon(st, ports, tmp, cleanup)
            _wait("Prometheus recording the hot reload", lambda: st.query(
                f'tellm_inference_model_reloads_total{{job="{JOBS["inference"]}",result="success"}} == 2'), 30, server)

        # Data for every panel: the controller routed with the model under traffic, and the rate
        # windows after that are full.
        if controller is not None:
            _wait("the controller routing with the model under traffic", lambda: all(st.query(e) for e in (
                f'tellm_routing_info{{job="{JOBS["controller"]}",router="model"}} == 1',
                f'tellm_mlu_ratio{{job="{JOBS["controller"]}"}} > 0.1',
                f'tellm_traffic_matrix_total_bits_per_second{{job="{JOBS["controller"]}"}} > 1e6')), 60, controller,
                interval=1)
        if JOBS["policy"] in targets:
            _wait_policy_events(st, policy)
        time.sleep(int(RATE_INTERVAL.rstrip("s")) + 2 * SCRAPE_INTERVAL_SECONDS)
        yield st


def _start_policy_daemon(st: Stack, ports: dict[str, int], tmp: Path, cleanup: contextlib.ExitStack) -> _Proc:
    """The rules daemon on replayed controller states, applying through the test's `tellm serve`."""
    grpc = f"127.0.0.1:{ports['inference_grpc']}"
    proc = _start("policy", _tellm(
        "policy", "run", "--engine", "rules", "--replay", str(POLICY_STATES),
        "--policy-service", grpc, "--inference", grpc, "--audit", str(st.policy_audit),
        "--poll-interval", str(POLICY_POLL_SECONDS), "--decide-every", "1",
        "--min-change-interval", str(POLICY_MIN_CHANGE_INTERVAL_SECONDS),
        "--rollback-window", str(POLICY_ROLLBACK_WINDOW_SECONDS),
        "--metrics-host", "127.0.0.1", "--metrics-port", str(ports["policy_metrics"])), tmp, cleanup)
    # Its first decision needs 5 polls (2.5 s): Prometheus (1 s scrapes) records the counters at 0
    # before they move, so increase() and the annotations see the events.
    _wait("policy daemon /metrics", lambda: "tellm_policy_changes_total" in _metrics_text(ports["policy_metrics"]),
          30, proc, interval=0.1)
    return proc


def _wait_policy_events(st: Stack, proc: _Proc) -> None:
    job = JOBS["policy"]
    _wait("Prometheus recording a policy change, an automatic rollback and a refused action",
          lambda: all(st.query(e) for e in (
              f'tellm_policy_changes_total{{job="{job}"}} > 0',
              f'tellm_policy_rollbacks_total{{job="{job}",trigger="regression"}} > 0',
              f'tellm_policy_actions_rejected_total{{job="{job}",tool="apply_policy"}} > 0')),
          60, proc, interval=1)


def _drive_inference(grpc_port: int, model: Path, tmp: Path, cleanup: contextlib.ExitStack) -> None:
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


# ---------------------------------------------------------------------------------------- tests
def _finite(result: list[dict]) -> bool:
    values = [s["value"][1] for s in result if "value" in s] + [v[1] for s in result for v in s.get("values", [])]
    return any(math.isfinite(float(v)) for v in values)


def _params():
    out = []
    for q in dashboard_queries():
        marks = [pytest.mark.mininet] if JOBS["controller"] in jobs(q.expr) else []
        out.append(pytest.param(q, id=q.id, marks=marks))
    return out


def _skip_unless_sources(stack: Stack, q: Query) -> None:
    missing = {j: stack.unavailable[j] for j in jobs(q.expr) if j not in stack.available}
    if missing:
        pytest.skip("; ".join(f"needs job {j}: {r}" for j, r in sorted(missing.items())))


@pytest.mark.parametrize("q", _params())
def test_dashboard_query_returns_data(stack, q: Query):
    _skip_unless_sources(stack, q)
    expr = substitute_grafana_macros(q.expr, RATE_INTERVAL, ANNOTATION_INTERVAL)
    if q.annotation:  # Grafana evaluates annotation queries over the dashboard's time range
        result = stack.query_range(expr, stack.start_time, time.time())
    else:
        result = stack.query(expr)
    assert result, f"{q.id}: no series for {expr}"
    assert _finite(result), f"{q.id}: only NaN/Inf for {expr}: {result}"


def test_targets_are_up(stack):
    doc = json.loads(_http_get(f"{stack.prometheus_url}/api/v1/targets"))
    health = {t["labels"]["job"]: t["health"] for t in doc["data"]["activeTargets"]}
    assert health == {job: "up" for job in stack.available}, health


@pytest.mark.mininet
def test_shared_latency_name_is_told_apart_by_job(stack):
    """tellm_inference_request_duration_seconds comes from both ends; the job label separates them."""
    needed = {JOBS["controller"], JOBS["inference"]}
    if not needed <= set(stack.available):
        pytest.skip("needs both the controller and the inference service: "
                    + "; ".join(stack.unavailable.get(j, "") for j in needed if j in stack.unavailable))
    result = stack.query("count by (job) (tellm_inference_request_duration_seconds_count)")
    assert {r["metric"]["job"] for r in result} == needed


@pytest.mark.mininet
def test_link_series_are_bounded_by_the_topology(stack):
    """Label cardinality: one `link` series per directed link of the configured topology, no more."""
    if JOBS["controller"] not in stack.available:
        pytest.skip(f"needs job {JOBS['controller']}: {stack.unavailable[JOBS['controller']]}")
    topo = yaml.safe_load(TOPOLOGY.read_text())
    for metric in ("tellm_link_utilization_ratio", "tellm_link_throughput_bits_per_second"):
        links = {r["metric"]["link"] for r in stack.query(f'{metric}{{job="{JOBS["controller"]}"}}')}
        assert len(links) == 2 * len(topo["links"]), (metric, sorted(links))


def test_policy_daemon_applied_rolled_back_and_refused(stack):
    """The policy panels show real events: what Prometheus scraped matches the daemon's audit log, and
    the policy in force is the one PolicyService (in `tellm serve`) reports."""
    job = JOBS["policy"]
    if job not in stack.available:
        pytest.skip(f"needs job {job}: {stack.unavailable[job]}")

    def value(expr: str) -> float:
        (r,) = stack.query(expr)
        return float(r["value"][1])

    audit = [json.loads(x) for x in stack.policy_audit.read_text().splitlines() if x.strip()]
    applied = [a for a in audit if a["tool"] == "apply_policy" and a["outcome"] == "applied"]
    rollbacks = [a for a in audit if a["tool"] == "rollback" and a["outcome"] == "applied"]
    refused = [a for a in audit if a["tool"] == "apply_policy" and a["outcome"].startswith("rejected")]
    assert applied and rollbacks and refused, audit
    # The rollback was the guard's, on the replayed jump from calm (~0.3) to a burst (0.75).
    assert all(a["trigger"] == "regression" and a["engine"] == "guard" for a in rollbacks), rollbacks
    assert any("rate limit" in a["outcome"] for a in refused), refused
    # Prometheus' last scrape may be up to one interval older than the log: counters only grow.
    assert 0 < value(f'tellm_policy_changes_total{{job="{job}"}}') <= len(applied)
    assert 0 < value(f'tellm_policy_rollbacks_total{{job="{job}",trigger="regression"}}') <= len(rollbacks)
    assert value(f'tellm_policy_rollbacks_total{{job="{job}",trigger="requested"}}') == 0
    assert 0 < value(f'tellm_policy_actions_rejected_total{{job="{job}",tool="apply_policy"}}') <= len(refused)
