"""``tellm demo``: the main job. Inference service + controller + a Mininet scenario + TM replay, once
under shortest-path routing and once under tellm, with a live MLU table, a summary and a PNG plot.
The run itself is tellm.mininet_scenarios.demo; this module parses the options and maps its errors."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
from pathlib import Path

from tellm.errors import CLIError

#: Kept literal so that `tellm --help` does not import the scenarios (a test checks they agree).
SCENARIO_NAMES = ["abilene", "diamond", "garr", "geant", "leafspine"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run tellm end to end on a Mininet network and compare it with shortest-path routing",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Start the inference service (CPU), the controller and a Mininet scenario (Open vSwitch, "
                    "userspace datapath, OpenFlow 1.5), replay a traffic matrix as many UDP flows with a "
                    "burst and a link failure on a schedule, and measure the maximum link utilisation (MLU) "
                    "from the switches' port counters: one phase per --routers entry, same traffic. Prints a "
                    "live table, then a summary; writes summary.json and mlu.png to --out. Needs root. "
                    "Cleans up the network and every process it started, also on Ctrl-C.")
    p.add_argument("--scenario", choices=SCENARIO_NAMES, default="diamond",
                   help="network: diamond (5-switch ring built so that shortest paths are bad), leafspine, "
                        "abilene or geant (built from SNDlib in the data folder, TELLM_DATA_DIR; capacities scaled to Mbit/s), "
                        "garr (Topology Zoo, 60 switches, shipped)")
    p.add_argument("--duration", type=float, default=60.0, metavar="SECONDS", help="traffic time per phase")
    p.add_argument("--routers", default="ecmp,model",
                   help="phases, comma-separated: ecmp (shortest-path baseline), model (tellm: the TE head "
                        "through the inference service), lp (the controller's in-process LP)")
    p.add_argument("--model", type=Path, default=None, metavar="FILE.onnx",
                   help="TE model for the inference service (default: the one shipped with tellm)")
    p.add_argument("--tm", default="scenario", metavar="SOURCE",
                   help="traffic: scenario (the scenario's own TM), a generated family (gravity, uniform, "
                        "poisson, bimodal, hotspot; --seed), or sndlib (the first real SNDlib matrix of abilene "
                        "or geant; needs the data folder, TELLM_DATA_DIR)")
    p.add_argument("--load", type=float, default=None, metavar="MLU",
                   help="scale the scenario's TM so shortest-path routing reaches this MLU (default: the "
                        "scenario's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of generated TMs")
    p.add_argument("--flows", type=int, default=128, help="UDP flows (distinct source ports) per host pair")
    p.add_argument("--no-events", action="store_true", help="no burst and no link failure")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS", help="controller interval")
    p.add_argument("--controller-flags", default="", metavar="FLAGS",
                   help="more options for every phase's `tellm controller`, as one quoted string (e.g. "
                        "\"--weight-deadband 0 --min-path-weight 0\" to see the churn without churn control)")
    p.add_argument("--out", type=Path, default=Path("tellm-demo"), help="folder for logs, summary.json, mlu.png")
    p.add_argument("--lock-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="how long to wait for another Mininet experiment on this machine to finish")
    p.set_defaults(func=run)


#: Controller options every phase sets itself (mininet_scenarios.orchestrate.start_controller).
RESERVED_CONTROLLER_FLAGS = frozenset({"--router", "--of-port", "--poll-interval", "--metrics-port", "--api-port",
                                       "--topology", "--inference"})


def run(args) -> int:
    from tellm.mininet_scenarios.report import ROUTER_TITLES

    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    bad = [r for r in routers if r not in ROUTER_TITLES]
    if bad or not routers:
        raise CLIError(f"--routers: unknown {bad[0]!r}; choose from {', '.join(ROUTER_TITLES)}" if bad
                       else "--routers: give at least one router")
    if not 10 <= args.duration <= 3600:
        raise CLIError("--duration must be between 10 and 3600 seconds")
    if args.load is not None and not 0 < args.load <= 1.5:
        raise CLIError("--load must be in (0, 1.5]")
    if not 1 <= args.flows <= 1024:
        raise CLIError("--flows must be between 1 and 1024")
    try:
        controller_flags = shlex.split(args.controller_flags)
    except ValueError as exc:
        raise CLIError(f"--controller-flags: {exc}") from None
    if any(f.split("=")[0] in RESERVED_CONTROLLER_FLAGS for f in controller_flags):
        raise CLIError(f"--controller-flags: the demo sets {', '.join(sorted(RESERVED_CONTROLLER_FLAGS))} itself")
    if os.geteuid() != 0:
        raise CLIError("needs root (Open vSwitch and Mininet create bridges and network namespaces); "
                       "run it with sudo, or use scripts/demo.sh as root")
    try:
        import mininet.net  # noqa: F401  (Debian package: Debian's python3 only)
    except ImportError:
        raise CLIError("Mininet is not importable: install the Debian package 'mininet' and run tellm from a "
                       "venv on /usr/bin/python3 with --system-site-packages (scripts/bootstrap.sh does this)")
    if args.model is not None and not args.model.exists():
        raise CLIError(f"--model {args.model}: no such file")

    from rich.console import Console

    from tellm.mininet_scenarios.demo import DemoConfig, run_demo
    from tellm.mininet_scenarios.net import TestbedError
    from tellm.mininet_scenarios.orchestrate import RunError
    from tellm.mininet_scenarios.scenarios import ScenarioError

    cfg = DemoConfig(scenario=args.scenario, duration_seconds=args.duration, routers=tuple(routers), model=args.model,
                     tm_source=args.tm, load=args.load, seed=args.seed, flows=args.flows, events=not args.no_events,
                     poll_interval_seconds=args.poll_interval, out=args.out, lock_timeout_seconds=args.lock_timeout,
                     controller_flags=tuple(controller_flags))

    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C so every finally block cleans up.
    def _term(*_):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _term)
    # A demo started from a script in the background inherits SIGINT ignored (what a non-interactive
    # shell does to its '&' jobs): Ctrl-C / kill -INT must still stop it and clean up.
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run_demo(cfg, Console())
    except (ScenarioError, TestbedError, RunError) as exc:
        raise CLIError(str(exc)) from None
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    return 0
