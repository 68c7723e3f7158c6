"""``tellm demo``: the main job. Inference service + controller + a Mininet scenario + TM replay, once
under shortest-path routing and once under tellm, with a live MLU table, a summary and a PNG plot."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import tempfile
import time
from pathlib import Path

from tellm.errors import CLIError

#: Kept literal so that `tellm --help` does not import the scenarios (a test checks they agree).
SCENARIO_NAMES = ["abilene", "diamond", "garr", "geant", "leafspine"]
ROUTER_TITLES = {"ecmp": "shortest path", "model": "tellm", "lp": "LP optimum"}


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
    p.add_argument("--out", type=Path, default=Path("tellm-demo"), help="folder for logs, summary.json, mlu.png")
    p.add_argument("--lock-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="how long to wait for another Mininet experiment on this machine to finish")
    p.set_defaults(func=run)


def default_events(scenario, demand_bps, duration_seconds: float):
    """A burst on the biggest demand (x1.5 from 30% to 45% of the run), then the busiest link under
    shortest paths whose loss leaves the network connected goes down at 60% and back up at 75%."""
    import networkx as nx
    import numpy as np

    from tecore import TrafficMatrix, ecmp_link_loads
    from tellm.mininet_scenarios.traffic import Event

    topo = scenario.topology
    d = np.asarray(demand_bps)
    s, t = np.unravel_index(int(np.argmax(d)), d.shape)
    events = [Event("burst", 0.30 * duration_seconds, topo.nodes[s], topo.nodes[t], factor=1.5,
                    until_seconds=0.45 * duration_seconds)]
    g = nx.Graph([(ln.src, ln.dst) for ln in scenario.links])
    bridges = {frozenset(e) for e in nx.bridges(g)}
    loads = ecmp_link_loads(topo, TrafficMatrix(d)) / topo.capacity_bps
    for l in np.argsort(-loads):
        u, v = topo.nodes[topo.src[l]], topo.nodes[topo.dst[l]]
        if frozenset((u, v)) not in bridges:
            events += [Event("link_down", 0.60 * duration_seconds, u, v),
                       Event("link_up", 0.75 * duration_seconds, u, v)]
            break
    return events


def traffic_matrix(scenario, source: str, seed: int, load: float | None):
    """The TM to replay, scaled so that shortest paths reach ``load`` (default: the scenario's)."""
    from tecore import generate, read_sndlib_demands, scale_to_mlu
    from tecore.traffic import GENERATORS, find_sndlib_demands

    topo = scenario.topology
    if source == "scenario":
        tm = scenario.default_tm(seed=seed)
        return tm if load is None else scale_to_mlu(topo, tm, load)
    if source in GENERATORS:
        tm = generate(topo, source, 1, seed=seed)[0]
    elif source == "sndlib":
        archive = find_sndlib_demands(scenario.name)
        if archive is None:
            raise CLIError(f"--tm sndlib: no SNDlib demand archive for {scenario.name!r} in the data folder "
                           "(only abilene and geant have one; set TELLM_DATA_DIR to ../shared/data)")
        tm = next(iter(read_sndlib_demands(archive, topo, limit=1)), None)
        if tm is None:
            raise CLIError(f"{archive}: no non-empty traffic matrix")
    else:
        raise CLIError(f"--tm {source!r}: choose scenario, sndlib or one of {', '.join(GENERATORS)}")
    return scale_to_mlu(topo, tm, scenario.load if load is None else load)


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def run(args) -> int:
    import numpy as np
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from tellm.mininet_scenarios import orchestrate as O
    from tellm.mininet_scenarios.scenarios import ScenarioError, get

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

    from tellm.mininet_scenarios.net import TestbedError, ensure_ovs, mininet_lock

    console = Console()
    try:
        scenario = get(args.scenario)
    except ScenarioError as exc:
        raise CLIError(str(exc)) from None
    tm = traffic_matrix(scenario, args.tm, args.seed, args.load)
    events = [] if args.no_events else default_events(scenario, tm.demand_bps, args.duration)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=out))
    topo_yaml = scenario.write_yaml(out / f"{scenario.name}.yaml")
    # Every process this run starts inherits this, so leftovers can be found by it (tests do).
    os.environ["TELLM_DEMO_RUN"] = str(workdir)
    console.print(f"[bold]tellm demo[/]: {scenario.name} ({len(scenario.switches)} switches, "
                  f"{len(scenario.links)} links at {sorted({l.rate_bps / 1e6 for l in scenario.links})} Mbit/s, "
                  f"{len(scenario.hosts())} hosts), TM total {tm.total_bps / 1e6:.2f} Mbit/s, "
                  f"{args.duration:.0f} s per phase, phases: {', '.join(ROUTER_TITLES[r] for r in routers)}")
    for e in events:
        console.print(f"  event at {e.at_seconds:5.1f} s: {e.label()}")

    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C so every finally block cleans up.
    def _term(*_):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _term)
    results = {}
    serve = None
    try:
        with mininet_lock(args.lock_timeout,
                          on_wait=lambda: console.print("waiting for another Mininet experiment to finish "
                                                        "(/tmp/tellm-mininet.lock) ...")):
            try:
                ensure_ovs()
            except TestbedError as exc:
                raise CLIError(str(exc)) from None
            inference = f"127.0.0.1:{O.free_port()}"
            if "model" in routers:
                with console.status("starting the inference service (CPU) ..."):
                    try:
                        serve = O.start_inference(int(inference.rsplit(":", 1)[1]), O.free_port(), workdir,
                                                  args.model)
                    except O.RunError as exc:
                        raise CLIError(str(exc)) from None
            rows: dict[int, dict] = {}

            def table() -> Table:
                t = Table(title=f"MLU measured on the switches ({scenario.name})", expand=False)
                t.add_column("t (s)", justify="right")
                for r in routers:
                    t.add_column(f"MLU {ROUTER_TITLES[r]}", justify="right")
                if "model" in routers:
                    t.add_column("shortest-path MLU (controller's estimate, same TM)", justify="right")
                t.add_column("event")
                for sec in sorted(rows)[-15:]:
                    row = rows[sec]
                    cells = [str(sec)] + [_fmt(row.get(r)) for r in routers]
                    if "model" in routers:
                        cells.append(_fmt(row.get("sp_model")))
                    t.add_row(*cells, row.get("event", ""))
                return t

            with Live(table(), console=console, refresh_per_second=4, transient=False) as live:
                for router in routers:
                    def on_sample(s, router=router):
                        row = rows.setdefault(int(s.t_seconds), {})
                        row[router] = s.measured_mlu
                        if router == "model":
                            row["sp_model"] = s.shortest_path_mlu
                        if s.event:
                            row["event"] = s.event
                        live.update(table())

                    def on_status(msg):
                        live.console.print(msg, markup=False, highlight=False)

                    try:
                        results[router] = O.run_phase(scenario, topo_yaml, router, tm.demand_bps, args.duration,
                                                      workdir, inference, events, on_sample, on_status,
                                                      flows=args.flows, poll_interval_seconds=args.poll_interval)
                    except O.RunError as exc:
                        raise CLIError(f"phase {router}: {exc}") from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: cleaning up[/]")
        raise
    finally:
        if serve is not None:
            serve.stop()
        signal.signal(signal.SIGTERM, old_term)

    summary = summarise(scenario, tm, routers, results, events, args.duration)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(out / "mlu.png", scenario.name, routers, results, events)
    console.print()
    t = Table(title="summary: mean MLU measured on the switches")
    t.add_column("router")
    t.add_column("steady (before events)", justify="right")
    t.add_column("whole run", justify="right")
    t.add_column("peak", justify="right")
    t.add_column("packets delivered", justify="right")
    for r in routers:
        s = summary["phases"][r]
        t.add_row(ROUTER_TITLES[r], _fmt(s["steady_mlu"]), _fmt(s["mean_mlu"]), _fmt(s["peak_mlu"]),
                  f"{s['received']}/{s['sent']}")
    console.print(t)
    if "ecmp" in routers and len(routers) > 1:
        base = summary["phases"]["ecmp"]["steady_mlu"]
        for r in routers:
            if r != "ecmp" and base > 0:
                gain = 100 * (1 - summary["phases"][r]["steady_mlu"] / base)
                console.print(f"{ROUTER_TITLES[r]}: steady MLU {abs(gain):.1f}% {'lower' if gain >= 0 else 'higher'} "
                              "than under shortest-path routing")
    console.print(f"wrote {out / 'summary.json'} and {out / 'mlu.png'} (logs in {workdir})")
    return 0


def summarise(scenario, tm, routers, results, events, duration_seconds: float) -> dict:
    import numpy as np

    warm = min(5.0, 0.2 * duration_seconds)
    first_event = min([e.at_seconds for e in events], default=duration_seconds)
    phases = {}
    for r in routers:
        res = results[r]
        mlus = [s.measured_mlu for s in res.samples]
        phases[r] = {
            "steady_mlu": res.steady_mlu(warm, first_event),
            "mean_mlu": res.steady_mlu(warm),
            "peak_mlu": float(np.max(mlus)) if mlus else float("nan"),
            "sent": res.sent, "received": res.received,
            "samples": [s.__dict__ for s in res.samples],
            "events": res.events,
        }
    return {"scenario": scenario.name, "tm_total_bps": tm.total_bps, "duration_seconds": duration_seconds,
            "warmup_seconds": warm, "events": [e.__dict__ for e in events], "phases": phases}


def plot(path: Path, name: str, routers, results, events) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in routers:
        xs = [s.t_seconds for s in results[r].samples]
        ax.plot(xs, [s.measured_mlu for s in results[r].samples], label=f"{ROUTER_TITLES[r]} (measured)", lw=2)
        if r == "model":
            sp = [(s.t_seconds, s.shortest_path_mlu) for s in results[r].samples if s.shortest_path_mlu is not None]
            if sp:
                ax.plot(*zip(*sp), ls="--", lw=1, label="shortest path (controller's estimate, same TM)")
    for e in events:
        ax.axvline(e.at_seconds, color="grey", ls=":", lw=1)
        ax.annotate(e.label(), (e.at_seconds, 0.02), rotation=90, fontsize=7, color="grey",
                    xycoords=("data", "axes fraction"))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("max link utilisation")
    ax.set_title(f"tellm demo on {name}: MLU over time")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
