"""The compose stack for real, as a user without an image registry runs it (docs/deployment.md).

deploy/no-registry.sh makes the local Debian base; then docker-compose (with deploy/no-registry.yml)
builds the tellm image and a Prometheus from Debian's package, starts the controller, the CPU
inference service, the policy daemon and Prometheus, and waits for every healthcheck. Checked: gRPC
health of both services of the inference server, every Prometheus target up, a Route from inside the
controller's container through the network alias it uses, and (with Mininet) scripts/compose_smoke.py
with real switches connected to the containerised controller. `down -v` at the end, whatever happened.

Skipped, with the reason, where no Docker engine answers (scripts/test.sh starts one when it can).
Host ports are picked free, and the project name is unique, so a stack a user runs is not touched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from .. import ROOT
TELLM_SERVICES = ("controller", "inference-cpu", "policy")
PROMETHEUS_JOBS = {"tellm-controller", "tellm-inference", "tellm-policy"}
#: Host-side port variables of docker-compose.yml (each defaults to the container port).
PORT_VARIABLES = ("TELLM_OPENFLOW_PORT", "TELLM_API_PORT", "TELLM_CONTROLLER_METRICS_PORT", "TELLM_GRPC_PORT",
                  "TELLM_INFERENCE_METRICS_PORT", "TELLM_POLICY_METRICS_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT")
BUILD_TIMEOUT_SECONDS = 900  # a cold build downloads every Python dependency; a cached one takes seconds
HEALTHY_TIMEOUT_SECONDS = 120

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT_SECONDS + 300)]


def docker_skip_reason() -> str | None:
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/bootstrap.sh installs docker.io and docker-compose)"
    r = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"no Docker engine answers ({last}); scripts/docker_engine.sh starts one as root"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Stack:
    env: dict[str, str]
    ports: dict[str, int]

    def compose(self, *args: str, timeout: float = 180, check: bool = True, stdin: str | None = None
                ) -> subprocess.CompletedProcess:
        r = subprocess.run(["docker-compose", *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                           timeout=timeout, input=stdin)
        if check and r.returncode != 0:
            pytest.fail(f"docker-compose {' '.join(args)} failed (exit {r.returncode}):\n{r.stdout[-3000:]}"
                        f"\n{r.stderr[-3000:]}")
        return r

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "absent"
        r = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", cid],
                           capture_output=True, text=True)
        return r.stdout.strip().split(" ")[-1] if r.returncode == 0 else "absent"

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "30", check=False).stdout[-6000:]

    def prometheus_targets(self) -> list[dict]:
        url = f"http://127.0.0.1:{self.ports['PROMETHEUS_PORT']}/api/v1/targets"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())["data"]["activeTargets"]


def _wait(check, timeout_seconds: float, interval_seconds: float = 1.0):
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval_seconds)


@pytest.fixture(scope="module")
def stack():
    reason = docker_skip_reason()
    if reason:
        pytest.skip(reason)
    prep = subprocess.run(["bash", str(ROOT / "deploy" / "no-registry.sh")], capture_output=True, text=True,
                          timeout=600)
    assert prep.returncode == 0, f"deploy/no-registry.sh failed:\n{prep.stdout}\n{prep.stderr}"
    ports = dict(zip(PORT_VARIABLES, _free_ports(len(PORT_VARIABLES))))
    env = {**os.environ, **{k: str(v) for k, v in ports.items()},
           "COMPOSE_FILE": "docker-compose.yml:deploy/no-registry.yml",
           "COMPOSE_PROJECT_NAME": f"tellmtest{os.getpid()}",
           "COMPOSE_PROFILES": "cpu,policy",
           "TELLM_TAG": "compose-test"}
    s = Stack(env, ports)
    t0 = time.monotonic()
    s.compose("build", timeout=BUILD_TIMEOUT_SECONDS)
    print(f"compose build: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    try:
        s.compose("up", "-d")
        healthy = _wait(lambda: all(s.health(svc) == "healthy" for svc in TELLM_SERVICES), HEALTHY_TIMEOUT_SECONDS)
        if not healthy:
            states = {svc: s.health(svc) for svc in TELLM_SERVICES}
            pytest.fail(f"not every tellm service turned healthy in {HEALTHY_TIMEOUT_SECONDS} s: {states}\n{s.logs()}")
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", check=False)
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={env['COMPOSE_PROJECT_NAME']}"],
                              capture_output=True, text=True).stdout.split()
        assert not left, f"containers left after down -v: {left}"


def test_every_tellm_service_is_healthy_and_runs_the_one_image(stack):
    images = set()
    for svc in TELLM_SERVICES:
        assert stack.health(svc) == "healthy", svc
        cid = stack.container(svc)
        images.add(subprocess.run(["docker", "inspect", "-f", "{{.Image}}", cid], capture_output=True,
                                  text=True).stdout.strip())
    assert len(images) == 1, f"the tellm services run {len(images)} different images"


def test_grpc_health_of_inference_and_policy_service(stack):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{stack.ports['TELLM_GRPC_PORT']}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "tellm.v1.TrafficEngineeringService", "tellm.v1.PolicyService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name or "server"


def test_prometheus_scrapes_every_target_up(stack):
    def all_up():
        try:
            targets = stack.prometheus_targets()
        except OSError:
            return None
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health if set(health) == PROMETHEUS_JOBS and all(h == "up" for h in health.values()) else None

    assert _wait(all_up, 60), f"targets: {stack.prometheus_targets()}"


ROUTE_IN_CONTROLLER = """
import numpy as np
from tecore import compute_paths, load_topology
from tellm.controller.routers import ModelRouter, RoutingInput
topo = load_topology("/etc/tellm/topology.yaml")
paths = compute_paths(topo)
demand = np.full(len(paths.pairs), 2e6)
r = ModelRouter("inference:50051", timeout_seconds=10).route(RoutingInput(topo, paths, demand, np.ones(topo.num_links)))
per_pair = np.add.reduceat(r.split, paths.pair_ptr[:-1])
print(r.router, float(r.predicted_mlu), float(np.abs(per_pair - 1).max()))
"""


def test_route_from_the_controller_container_through_the_inference_alias(stack):
    """The controller's own router, in its container, over the compose network name it is configured with."""
    r = stack.compose("exec", "-T", "controller", "python3", "-", stdin=ROUTE_IN_CONTROLLER)
    router, predicted_mlu, split_error = r.stdout.split()
    assert router == "model"
    assert 0 < float(predicted_mlu) < 1  # 2 Mbit/s per pair on 10 Mbit/s links
    assert float(split_error) < 1e-6


@pytest.mark.mininet
def test_compose_smoke_script_with_real_switches(stack):
    """scripts/compose_smoke.py as documented: Mininet on the host, routed by the containerised controller."""
    if os.geteuid() != 0 or shutil.which("ovs-vsctl") is None:
        pytest.skip("needs root and Open vSwitch (scripts/bootstrap.sh installs it)")
    p = stack.ports
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "compose_smoke.py"), "--seconds", "15",
                        "--prometheus", f"http://127.0.0.1:{p['PROMETHEUS_PORT']}",
                        "--state-url", f"http://127.0.0.1:{p['TELLM_API_PORT']}/state",
                        "--of-port", str(p["TELLM_OPENFLOW_PORT"])],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-3000:]}\n{stack.logs()}"
    assert "routing with: ['model']" in r.stdout
