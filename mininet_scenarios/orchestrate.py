"""The pieces of an end-to-end run, shared by ``tellm demo`` and the e2e tests: the inference service
and the controller as child processes, readiness checks against the controller's JSON API, a
parallel all-pairs ping, and one measured phase (scenario + controller + traffic + events + samples).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .scenarios import Scenario
from .traffic import Event, TrafficRun

log = logging.getLogger("tellm.mininet")


class RunError(RuntimeError):
    """A service did not come up, or the network never became usable; the message says which log to read."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tellm_command() -> list[str]:
    """How to run the tellm CLI of this very installation (works without PATH set up)."""
    return [sys.executable, "-m", "tellm.cli"]


@dataclass
class Service:
    """A child process in its own session (so stopping it stops its children), with a log file."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "Service":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        out.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_seconds: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the child's pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass


def wait_until(check: Callable[[], bool], timeout_seconds: float, what: str, service: Service | None = None,
               interval_seconds: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise RunError(f"{service.name} exited (code {service.proc.returncode}) while waiting for {what}; "
                           f"its log {service.log_path} ends with:\n{service.tail()}")
        try:
            if check():
                return
        except Exception as exc:  # not up yet: connection refused, half-written state, ...
            log.debug("waiting for %s: %s", what, exc)
        time.sleep(interval_seconds)
    extra = f"; log {service.log_path}:\n{service.tail()}" if service is not None else ""
    raise RunError(f"timed out after {timeout_seconds:.0f} s waiting for {what}{extra}")


# ------------------------------------------------------------------------------ services
def start_inference(port: int, metrics_port: int, workdir: Path, model: Path | None = None,
                    timeout_seconds: float = 60.0, extra: list[str] | None = None, security=None) -> Service:
    """``extra``: more `tellm serve` flags (e.g. TLS and tokens); ``security``: the
    tellm.contract.security.settings.ClientSecurity the readiness probe connects with."""
    argv = tellm_command() + ["serve", "--port", str(port), "--metrics-port", str(metrics_port),
                              "--provider", "cpu", "--ort-threads", "1", "--workers", "4"] + list(extra or [])
    if model is not None:
        argv += ["--model", str(model)]
    svc = Service("inference service (tellm serve)", argv, workdir / "serve.log").start()

    def healthy() -> bool:
        from tellm.contract.client import InferenceClient

        kw = {"security": security} if security is not None else {}
        c = InferenceClient(f"127.0.0.1:{port}", timeout_seconds=1.0, retries=0, **kw)
        try:
            return c.health()
        finally:
            c.close()

    try:
        wait_until(healthy, timeout_seconds, "the inference service to report healthy", svc, 0.5)
    except BaseException:
        svc.stop()
        raise
    return svc


@dataclass
class ControllerPorts:
    of_port: int
    metrics_port: int
    api_port: int

    @classmethod
    def pick(cls) -> "ControllerPorts":
        return cls(free_port(), free_port(), free_port())


def start_controller(topology_yaml: Path | None, router: str, ports: ControllerPorts, inference_address: str | None,
                     workdir: Path, poll_interval_seconds: float = 1.0, k: int | None = 4,
                     extra: list[str] | None = None, verbose: int = 0) -> Service:
    """``tellm controller`` as a child process, logging to ``workdir/controller-<router>.log``; returns once
    its JSON API answers. ``topology_yaml`` None = the controller discovers the network; ``inference_address``
    None = the controller's default (also for ``k``); ``verbose`` = the number of ``-v`` (1: info log);
    ``extra``: more options."""
    argv = tellm_command() + ["-v"] * verbose + ["controller", "--router", router, "--of-port", str(ports.of_port),
                                                 "--poll-interval", str(poll_interval_seconds),
                                                 "--metrics-port", str(ports.metrics_port),
                                                 "--api-port", str(ports.api_port), "--workers", "1"]
    if k is not None:
        argv += ["--k", str(k)]
    if topology_yaml is not None:
        argv += ["--topology", str(topology_yaml)]
    if inference_address is not None:
        argv += ["--inference", inference_address]
    argv += list(extra or [])
    svc = Service(f"controller (router {router})", argv, workdir / f"controller-{router}.log").start()
    try:
        wait_until(lambda: controller_state(ports.api_port) is not None, 60, "the controller's API", svc, 0.3)
    except BaseException:
        svc.stop()
        raise
    return svc


def controller_state(api_port: int, groups: bool = True) -> dict | None:
    """GET /state; ``groups=False``: without the per-pair groups (cheap for the controller)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/state{'' if groups else '?groups=0'}",
                                    timeout=2) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def controller_metric(metrics_port: int, name: str) -> float | None:
    """The sum of a Prometheus metric's samples (all label values) from the controller's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    vals = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(vals) if vals else None


# ------------------------------------------------------------------------------ reachability
#: Destinations pinged at once from one host (see ping_all), and pings in flight over all hosts: on a
#: 60-host testbed 16 per host (960 ping processes at once) starved Open vSwitch on a 2-core machine.
PING_BATCH = 16
PINGS_AT_ONCE = 120


def ping_all(testbed, timeout_seconds: float = 1.0, pairs: list[tuple[str, str]] | None = None
             ) -> dict[tuple[str, str], bool]:
    """Ping every ordered host pair once, all hosts in parallel; {(src host, dst host): reached}."""
    names = testbed.host_names()
    ip = {h: testbed.host(h).IP() for h in names}
    todo: dict[str, list[str]] = {}
    for s, d in pairs if pairs is not None else [(s, d) for s in names for d in names if s != d]:
        todo.setdefault(s, []).append(d)
    w = max(1, int(round(timeout_seconds)))
    per_host = max(1, min(PING_BATCH, PINGS_AT_ONCE // max(1, len(todo))))
    out = {}
    # A host's shell reads one command line per round: at most PING_BATCH destinations, so that the
    # line stays under the terminal's 4096-character limit (a longer one never completes), and at most
    # PINGS_AT_ONCE pings over all hosts.
    for lo in range(0, max((len(d) for d in todo.values()), default=0), per_host):
        batch = {s: dsts[lo:lo + per_host] for s, dsts in todo.items() if dsts[lo:lo + per_host]}
        for s, dsts in batch.items():
            script = " ".join(f"(ping -n -q -c1 -W{w} {ip[d]} >/dev/null 2>&1 && echo OK {d} || echo NO {d}) &"
                              for d in dsts)
            testbed.host(s).sendCmd(script + " wait")
        for s, dsts in batch.items():
            text = testbed.host(s).waitOutput()
            ok = set(re.findall(r"^OK (\S+)", text, re.M))
            for d in dsts:
                out[(s, d)] = d in ok
    return out


def wait_all_reachable(testbed, timeout_seconds: float, pairs=None) -> float:
    """Ping until every pair answers; returns the seconds it took. Raises RunError on timeout."""
    t0 = time.monotonic()
    pending = pairs
    while True:
        res = ping_all(testbed, 1.0, pending)
        pending = [p for p, ok in res.items() if not ok]
        if not pending:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_seconds:
            raise RunError(f"{len(pending)} host pair(s) still unreachable after {timeout_seconds:.0f} s, "
                           f"e.g. {pending[:5]}")
        time.sleep(0.3)


# ------------------------------------------------------------------------------ one measured phase
@dataclass
class Sample:
    t_seconds: float
    measured_mlu: float  # from the switches' port counters, links that are up
    controller_mlu: float | None
    shortest_path_mlu: float | None  # the controller's counterfactual: shortest paths on the same TM
    predicted_mlu: float | None
    router: str | None
    event: str = ""
    realisation_max: float | None = None  # max over up links of |measured - predicted| utilisation
    routing_seconds: float | None = None
    routing_age_seconds: float | None = None


@dataclass
class PhaseResult:
    router: str
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)
    loop: dict = field(default_factory=dict)  # loopcheck.loop_summary

    def steady_mlu(self, skip_seconds: float, until_seconds: float | None = None) -> float:
        xs = [s.measured_mlu for s in self.samples
              if s.t_seconds >= skip_seconds and (until_seconds is None or s.t_seconds <= until_seconds)]
        return float(np.mean(xs)) if xs else float("nan")


def measured_utilisation(tb, prev_bytes: np.ndarray, dt_seconds: float, link_up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cur = tb.tx_bytes()
    util = (cur - prev_bytes) * 8.0 / dt_seconds / tb.scenario.topology.capacity_bps
    util[~link_up] = 0.0
    return util, cur


def run_phase(scenario: Scenario, topology_yaml: Path, router: str, demand_bps: np.ndarray,
              duration_seconds: float, workdir: Path, inference_address: str, events: list[Event] | None = None,
              on_sample: Callable[[Sample], None] | None = None, on_status: Callable[[str], None] | None = None,
              flows: int = 128, poll_interval_seconds: float = 1.0, settle_seconds: float = 3.0,
              controller_flags: list[str] | None = None) -> PhaseResult:
    """Controller (``router``) + Mininet + traffic for ``duration_seconds``; one Sample per second.
    The caller holds the Mininet lock and has OVS running."""
    from .loopcheck import link_loads_pair, loop_summary
    from .net import Testbed

    status = on_status or (lambda msg: None)
    events = sorted(events or [], key=lambda e: e.at_seconds)
    ports = ControllerPorts.pick()
    phase_dir = workdir / router
    phase_dir.mkdir(parents=True, exist_ok=True)
    status(f"[{router}] starting the controller")
    ctl = start_controller(topology_yaml, router, ports, inference_address, phase_dir, poll_interval_seconds,
                           extra=controller_flags)
    tb = run = None
    result = PhaseResult(router)
    try:
        status(f"[{router}] building {scenario.name}: {len(scenario.switches)} switches, "
               f"{len(scenario.hosts())} hosts, {len(scenario.links)} links")
        tb = Testbed.start(scenario, of_port=ports.of_port)
        n = len(scenario.switches)
        wait_until(lambda: len(controller_state(ports.api_port, groups=False)["topology"]["connected_switches"]) == n,
                   60, f"all {n} switches to connect to the controller", ctl)
        status(f"[{router}] waiting until every host pair answers ping")
        # ping_all pings at most PINGS_AT_ONCE pairs at a time: a big testbed needs more rounds.
        wait_all_reachable(tb, max(60.0, 2.0 * len(scenario.hosts())))
        run = TrafficRun(tb, demand_bps, duration_seconds, phase_dir / "traffic", events=events, flows=flows)
        start = run.start()
        while time.time() < start:
            time.sleep(0.02)
        status(f"[{router}] traffic running for {duration_seconds:.0f} s")
        topo = scenario.topology
        link_names = [topo.link_name(i) for i in range(topo.num_links)]
        loads: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        link_up = np.ones(topo.num_links, dtype=bool)
        prev = tb.tx_bytes()
        t_prev = time.monotonic()
        pending = list(events)  # sorted by time; bursts are already in the senders' plans
        next_tick = 1.0
        label = ""
        while True:
            el = run.elapsed()
            while pending and pending[0].at_seconds <= el:
                e = pending.pop(0)
                if e.kind in ("link_down", "link_up"):
                    tb.set_link(e.src, e.dst, e.kind == "link_up")
                    for a, b in ((e.src, e.dst), (e.dst, e.src)):
                        link_up[topo.link_index[(topo.node_index[a], topo.node_index[b])]] = e.kind == "link_up"
                result.events.append((el, e.label()))
                label = ", ".join(x for x in (label, e.label()) if x)
            if el >= next_tick:
                now = time.monotonic()
                dt = now - t_prev
                util, prev = measured_utilisation(tb, prev, dt, link_up)
                t_prev = now
                st = controller_state(ports.api_port, groups=False) or {}
                sp = st.get("shortest_path_mlu")
                pair = link_loads_pair(util, link_names, link_up, st)
                dev = None if pair is None else np.abs(pair[0] - pair[1])
                if pair is not None and dt >= 0.5:  # a late sample's short window is mostly noise
                    loads[round(el)] = pair
                s = Sample(round(el), float(util.max(initial=0.0)), st.get("mlu"), sp, st.get("predicted_mlu"),
                           st.get("router"), label, None if dev is None else float(np.nanmax(dev, initial=0.0)),
                           st.get("routing_seconds"), st.get("routing_age_seconds"))
                label = ""
                result.samples.append(s)
                if on_sample:
                    on_sample(s)
                next_tick += 1.0
                if el >= duration_seconds:
                    break
            if not ctl.alive():
                raise RunError(f"the controller exited during the run; log {ctl.log_path}:\n{ctl.tail()}")
            time.sleep(0.05)
        run.wait_senders()
        run.stop_receivers()
        loss = run.loss()
        result.sent, result.received = loss.sent, loss.received
        status(f"[{router}] pinging every host pair under the installed routing")
        reached = ping_all(tb, 1.0)
        st = controller_state(ports.api_port, groups=False) or {}
        result.loop = loop_summary(result.samples, loads, events, min(5.0, 0.2 * duration_seconds),
                                   st.get("intervals"), {"reached": sum(reached.values()), "pairs": len(reached)})
        result.loop["controller_metrics"] = {
            name: controller_metric(ports.metrics_port, name) for name in (
                "tellm_inference_request_duration_seconds_sum", "tellm_inference_request_duration_seconds_count",
                "tellm_fallback_total", "tellm_openflow_messages_total", "tellm_control_interval_overruns_total",
                "tellm_router_busy_intervals_total", "tellm_group_updates_total")}
        return result
    finally:
        if run is not None:
            run.kill()
        if tb is not None:
            tb.stop()
        ctl.stop()
