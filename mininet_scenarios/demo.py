"""One demo run: the inference service (CPU) and, per phase, the controller and a Mininet scenario, the
same traffic replayed under each router, with a live MLU table; then summary.json, its table and mlu.png.
``tellm demo`` parses the options into a ``DemoConfig`` and maps the errors raised here
(ScenarioError, TestbedError, RunError) to one-line operator errors.

Needs root and Mininet (Debian's python3); the caller checks both before calling ``run_demo``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import orchestrate as O
from .net import LOCK_PATH, ensure_ovs, mininet_lock
from .report import ROUTER_TITLES, LiveTable, plot, print_summary, summarise
from .scenarios import get
from .schedule import default_events, traffic_matrix


@dataclass(frozen=True)
class DemoConfig:
    scenario: str = "diamond"
    duration_seconds: float = 60.0
    routers: tuple[str, ...] = ("ecmp", "model")  # one phase each, in this order
    model: Path | None = None  # the inference service's default when None
    tm_source: str = "scenario"  # scenario, sndlib or a generated family (see schedule.traffic_matrix)
    load: float | None = None  # shortest-path MLU the TM is scaled to (None: the scenario's)
    seed: int = 0
    flows: int = 128  # UDP flows per host pair
    events: bool = True  # the default burst and link failure
    poll_interval_seconds: float = 1.0
    out: Path = Path("tellm-demo")
    lock_timeout_seconds: float = 900.0
    controller_flags: tuple[str, ...] = ()  # more `tellm controller` options for every phase


def run_demo(cfg: DemoConfig, console) -> dict:
    """Run every phase of ``cfg`` and write summary.json and mlu.png to ``cfg.out``; returns the summary.
    Every network and process it starts is gone when it returns or raises (also on KeyboardInterrupt)."""
    from rich.live import Live

    routers = list(cfg.routers)
    scenario = get(cfg.scenario)
    tm = traffic_matrix(scenario, cfg.tm_source, cfg.seed, cfg.load)
    events = default_events(scenario, tm.demand_bps, cfg.duration_seconds) if cfg.events else []
    out = cfg.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=out))
    topo_yaml = scenario.write_yaml(out / f"{scenario.name}.yaml")
    # Every process this run starts inherits this, so leftovers can be found by it (tests do).
    os.environ["TELLM_DEMO_RUN"] = str(workdir)
    console.print(f"[bold]tellm demo[/]: {scenario.name} ({len(scenario.switches)} switches, "
                  f"{len(scenario.links)} links at {sorted({l.rate_bps / 1e6 for l in scenario.links})} Mbit/s, "
                  f"{len(scenario.hosts())} hosts), TM total {tm.total_bps / 1e6:.2f} Mbit/s, "
                  f"{cfg.duration_seconds:.0f} s per phase, phases: {', '.join(ROUTER_TITLES[r] for r in routers)}")
    for e in events:
        console.print(f"  event at {e.at_seconds:5.1f} s: {e.label()}")

    results = {}
    serve = None
    try:
        with mininet_lock(cfg.lock_timeout_seconds,
                          on_wait=lambda: console.print("waiting for another Mininet experiment to finish "
                                                        f"({LOCK_PATH}) ...")):
            ensure_ovs()
            inference = f"127.0.0.1:{O.free_port()}"
            if "model" in routers:
                with console.status("starting the inference service (CPU) ..."):
                    serve = O.start_inference(int(inference.rsplit(":", 1)[1]), O.free_port(), workdir, cfg.model)
            table = LiveTable(scenario.name, routers)
            with Live(table.render(), console=console, refresh_per_second=4, transient=False) as live:
                for router in routers:
                    def on_sample(s, router=router):
                        table.add(router, s)
                        live.update(table.render())

                    def on_status(msg):
                        live.console.print(msg, markup=False, highlight=False)

                    try:
                        results[router] = O.run_phase(scenario, topo_yaml, router, tm.demand_bps,
                                                      cfg.duration_seconds, workdir, inference, events, on_sample,
                                                      on_status, flows=cfg.flows,
                                                      poll_interval_seconds=cfg.poll_interval_seconds,
                                                      controller_flags=list(cfg.controller_flags))
                    except O.RunError as exc:
                        raise O.RunError(f"phase {router}: {exc}") from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: cleaning up[/]")
        raise
    finally:
        if serve is not None:
            serve.stop()

    summary = summarise(scenario, tm, routers, results, events, cfg.duration_seconds)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(out / "mlu.png", scenario.name, routers, results, events)
    console.print()
    print_summary(console, summary, routers)
    console.print(f"wrote {out / 'summary.json'} and {out / 'mlu.png'} (logs in {workdir})")
    return summary
