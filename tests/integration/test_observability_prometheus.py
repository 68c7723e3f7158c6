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
import shutil
import time

import pytest
import yaml

from tellm.mininet_scenarios import net as testbed_net
from tellm.mininet_scenarios.orchestrate import free_port
from tellm.mininet_scenarios.scenarios import from_yaml
from tellm.mininet_scenarios.udpflows import start_udp

from .._observability import Query, dashboard_queries, jobs, substitute_grafana_macros
from .observability_stack import (ANNOTATION_INTERVAL, JOBS, RATE_INTERVAL, SCRAPE_INTERVAL_SECONDS, TOPOLOGY, Stack,
                                  controller_unavailable, drive_inference, http_get, inference_unavailable,
                                  metrics_text, policy_unavailable, start_policy_daemon, start_process,
                                  start_prometheus, tellm_argv, wait_for, wait_policy_events)


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
        inference_reason = inference_unavailable()
        reasons = {JOBS["inference"]: inference_reason,
                   JOBS["controller"]: controller_unavailable() if wants_network else
                   "deselected: no selected test is marked mininet",
                   JOBS["policy"]: policy_unavailable(inference_reason)}
        ports = {"inference_grpc": free_port(), "inference_metrics": free_port(), "controller_metrics": free_port(),
                 "controller_api": free_port(), "of": free_port(), "policy_metrics": free_port()}
        targets = {}
        if reasons[JOBS["inference"]] is None:
            targets[JOBS["inference"]] = f"127.0.0.1:{ports['inference_metrics']}"
        if reasons[JOBS["controller"]] is None:
            targets[JOBS["controller"]] = f"127.0.0.1:{ports['controller_metrics']}"
        if reasons[JOBS["policy"]] is None:
            targets[JOBS["policy"]] = f"127.0.0.1:{ports['policy_metrics']}"
        if not targets:
            pytest.skip("no tellm metric source can run here: " + "; ".join(f"{j}: {r}" for j, r in reasons.items()))
        st = Stack(start_prometheus(tmp, targets, cleanup), dict(targets),
                   {j: r for j, r in reasons.items() if r is not None}, time.time())

        controller = None
        if JOBS["controller"] in targets:
            try:
                cleanup.enter_context(testbed_net.mininet_lock(timeout_seconds=300))
            except testbed_net.TestbedError as exc:  # another experiment holds the machine's switches
                pytest.skip(str(exc))
            testbed_net.ensure_ovs()
            # Before the inference service exists: the first routed loops fall back (and say so).
            controller = start_process("controller", tellm_argv(
                "controller", "--topology", str(TOPOLOGY), "--router", "model",
                "--inference", f"127.0.0.1:{ports['inference_grpc']}", "--inference-timeout", "0.5",
                "--of-port", str(ports["of"]), "--poll-interval", "1",
                "--metrics-port", str(ports["controller_metrics"]), "--api-port", str(ports["controller_api"])),
                tmp, cleanup)
            wait_for("controller /metrics", lambda: "tellm_mlu_ratio" in metrics_text(ports["controller_metrics"]),
                  60, controller)
            testbed = testbed_net.Testbed.start(from_yaml(TOPOLOGY), of_port=ports["of"])  # hosts h<dpid>x1
            cleanup.callback(testbed.stop)
            hosts = [testbed.host(name) for name in testbed.host_names()]
            wait_for("a fallback while inference is down",
                  lambda: 'tellm_fallback_total{reason="unavailable"}' in metrics_text(ports["controller_metrics"]),
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
            server = start_process("inference", tellm_argv(
                "serve", "--host", "127.0.0.1", "--port", str(ports["inference_grpc"]),
                "--metrics-port", str(ports["inference_metrics"]), "--model", str(model),
                "--watch-interval", "0.5", "--workers", "4", "--ort-threads", "1"), tmp, cleanup)
            wait_for("inference /metrics", lambda: "tellm_model_info{" in metrics_text(ports["inference_metrics"]),
                  60, server)
            wait_for("Prometheus recording the first model load", lambda: st.query(
                f'tellm_inference_model_reloads_total{{job="{JOBS["inference"]}",result="success"}} == 1'), 30, server)
            drive_inference(ports["inference_grpc"], model, tmp, cleanup)
            if JOBS["policy"] in targets:
                st.policy_audit = tmp / "policy-audit.jsonl"
                policy = start_policy_daemon(st, ports, tmp, cleanup)
            wait_for("Prometheus recording the hot reload", lambda: st.query(
                f'tellm_inference_model_reloads_total{{job="{JOBS["inference"]}",result="success"}} == 2'), 30, server)

        # Data for every panel: the controller routed with the model under traffic, and the rate
        # windows after that are full.
        if controller is not None:
            wait_for("the controller routing with the model under traffic", lambda: all(st.query(e) for e in (
                f'tellm_routing_info{{job="{JOBS["controller"]}",router="model"}} == 1',
                f'tellm_mlu_ratio{{job="{JOBS["controller"]}"}} > 0.1',
                f'tellm_traffic_matrix_total_bits_per_second{{job="{JOBS["controller"]}"}} > 1e6')), 60, controller,
                interval=1)
        if JOBS["policy"] in targets:
            wait_policy_events(st, policy)
        time.sleep(int(RATE_INTERVAL.rstrip("s")) + 2 * SCRAPE_INTERVAL_SECONDS)
        yield st


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
    doc = json.loads(http_get(f"{stack.prometheus_url}/api/v1/targets"))
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
