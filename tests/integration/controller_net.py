"""The controller's Mininet tests on the testbed harness (tellm.mininet_scenarios): the controller and
a scenario's network brought up together under the Mininet lock, a handle on both, and the 4-switch
diamond most of these tests use."""

from __future__ import annotations

import json
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tellm.mininet_scenarios.net import Testbed, ensure_ovs, mininet_lock, mininet_unavailable
from tellm.mininet_scenarios.orchestrate import ControllerPorts, Service, start_controller
from tellm.mininet_scenarios.scenarios import LinkSpec, Scenario

# Links with capacities (bit/s). Path cs1-cs2-cs4 is 3x the capacity of cs1-cs3-cs4, so the min-MLU
# split of cs1 -> cs4 traffic is exactly 0.75 / 0.25. Switch cs<i> has datapath id i.
SWITCHES = ["cs1", "cs2", "cs3", "cs4"]
LINKS = [("cs1", "cs2", 30e6), ("cs1", "cs3", 10e6), ("cs2", "cs4", 30e6), ("cs3", "cs4", 10e6)]
HOSTS_PER_SWITCH = 2


def diamond_scenario() -> Scenario:
    """The diamond; its Mininet bridges carry the topology's names (cs1..cs4)."""
    return Scenario("ctl-diamond", "4-switch diamond, upper path 3x the capacity of the lower",
                    tuple(SWITCHES), tuple(LinkSpec(a, b, c) for a, b, c in LINKS),
                    hosts_per_switch=HOSTS_PER_SWITCH, bridge_prefix="cs")


@dataclass
class Ctx:
    """A running controller (child process) and its Mininet network; reads GET /state."""

    router: str
    testbed: Testbed
    service: Service
    ports: ControllerPorts
    #: time.monotonic() when the network started to be built
    network_started_monotonic: float = 0.0

    @property
    def net(self):
        return self.testbed.net

    @property
    def ctl(self):
        return self.service.proc

    @property
    def api_port(self) -> int:
        return self.ports.api_port

    @property
    def metrics_port(self) -> int:
        return self.ports.metrics_port

    @property
    def log_path(self) -> Path:
        return self.service.log_path

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/state", timeout=5) as r:
            return json.load(r)

    def wait(self, pred, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.state()
            if pred(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last state router={last and last['router']}")


@contextmanager
def controller_on(scenario: Scenario, workdir: Path, router: str, ready, what: str, topology: bool = True,
                  k: int | None = 2, extra: list[str] | None = None, ready_timeout_seconds: float = 30):
    """Under the Mininet lock: the controller (``router``, ``k`` paths per pair or the controller's
    default for None, info log; with the scenario's topology file, or discovering it), then the
    scenario's network connected to it; yields a Ctx once ``ready(state)`` holds. Stops both and
    removes the bridges afterwards."""
    reason = mininet_unavailable()
    if reason:
        pytest.skip(reason)
    ports = ControllerPorts.pick()
    with mininet_lock():
        ensure_ovs()
        topo = scenario.write_yaml(workdir / f"{scenario.name}.yaml") if topology else None
        svc = start_controller(topo, router, ports, None, workdir, k=k, extra=extra, verbose=1)
        tb = None
        try:
            t0 = time.monotonic()
            tb = Testbed.start(scenario, of_port=ports.of_port)
            ctx = Ctx(router, tb, svc, ports, t0)
            deadline = time.monotonic() + ready_timeout_seconds
            while True:
                try:
                    ctx.wait(ready, 5, what)
                    break
                except (OSError, AssertionError):
                    if time.monotonic() > deadline or not svc.alive():
                        raise
            yield ctx
        finally:
            try:
                if tb is not None:
                    tb.stop()
            finally:
                svc.stop()


def controller_on_diamond(workdir: Path, router: str, ready, what: str, topology: bool = True,
                          extra: list[str] | None = None):
    """``controller_on`` the diamond with k=2."""
    return controller_on(diamond_scenario(), workdir, router, ready, what, topology=topology, extra=extra)
