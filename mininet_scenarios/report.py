"""What a demo run shows and writes: the live MLU table, the summary (summary.json and its table)
and the MLU-over-time plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: Phase names as the tables and the plot show them.
ROUTER_TITLES = {"ecmp": "shortest path", "model": "tellm", "lp": "LP optimum"}


def fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


class LiveTable:
    """The per-second MLU of every phase, one row per second (the last 15 shown)."""

    def __init__(self, scenario_name: str, routers: list[str]):
        self.scenario_name, self.routers = scenario_name, routers
        self.rows: dict[int, dict] = {}

    def add(self, router: str, sample) -> None:
        row = self.rows.setdefault(int(sample.t_seconds), {})
        row[router] = sample.measured_mlu
        if router == "model":
            row["sp_model"] = sample.shortest_path_mlu
        if sample.event:
            row["event"] = sample.event

    def render(self):
        from rich.table import Table

        t = Table(title=f"MLU measured on the switches ({self.scenario_name})", expand=False)
        t.add_column("t (s)", justify="right")
        for r in self.routers:
            t.add_column(f"MLU {ROUTER_TITLES[r]}", justify="right")
        if "model" in self.routers:
            t.add_column("shortest-path MLU (controller's estimate, same TM)", justify="right")
        t.add_column("event")
        for sec in sorted(self.rows)[-15:]:
            row = self.rows[sec]
            cells = [str(sec)] + [fmt(row.get(r)) for r in self.routers]
            if "model" in self.routers:
                cells.append(fmt(row.get("sp_model")))
            t.add_row(*cells, row.get("event", ""))
        return t


def summarise(scenario, tm, routers, results, events, duration_seconds: float) -> dict:
    """summary.json: per phase the steady MLU (after warm-up, before the first event), the mean and peak
    MLU, packets sent and received, every sample and event."""
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
            "loop": res.loop,
        }
    return {"scenario": scenario.name, "tm_total_bps": tm.total_bps, "duration_seconds": duration_seconds,
            "warmup_seconds": warm, "events": [e.__dict__ for e in events], "phases": phases}


def print_summary(console, summary: dict, routers: list[str]) -> None:
    """The summary table, then each phase's steady MLU against shortest-path routing's."""
    from rich.table import Table

    t = Table(title="summary: mean MLU measured on the switches")
    t.add_column("router")
    t.add_column("steady (before events)", justify="right")
    t.add_column("whole run", justify="right")
    t.add_column("peak", justify="right")
    t.add_column("packets delivered", justify="right")
    for r in routers:
        s = summary["phases"][r]
        t.add_row(ROUTER_TITLES[r], fmt(s["steady_mlu"]), fmt(s["mean_mlu"]), fmt(s["peak_mlu"]),
                  f"{s['received']}/{s['sent']}")
    console.print(t)
    for r in routers:
        lp = summary["phases"][r].get("loop") or {}
        if lp:
            re_, iv, ping = lp["realisation"], lp["intervals"], lp.get("ping") or {}
            console.print(f"{ROUTER_TITLES[r]}: ping {ping.get('reached')}/{ping.get('pairs')} pairs; realised vs "
                          f"predicted link load max {fmt(re_['max'])}, p95 {fmt(re_['p95'])} of capacity per second, "
                          f"max {fmt(re_['window_max'])} over steady windows; interval "
                          f"p50 {fmt(iv['period_p50_seconds'])} s, p99 {fmt(iv['period_p99_seconds'])} s, "
                          f"{iv['overruns']} overrun(s); messages/interval p50 {iv['messages_p50']}, "
                          f"max {iv['messages_max']}")
    if "ecmp" in routers and len(routers) > 1:
        base = summary["phases"]["ecmp"]["steady_mlu"]
        for r in routers:
            if r != "ecmp" and base > 0:
                gain = 100 * (1 - summary["phases"][r]["steady_mlu"] / base)
                console.print(f"{ROUTER_TITLES[r]}: steady MLU {abs(gain):.1f}% {'lower' if gain >= 0 else 'higher'} "
                              "than under shortest-path routing")


def plot(path: Path, name: str, routers, results, events) -> None:
    """mlu.png: the measured MLU of every phase over time, the controller's shortest-path estimate, events."""
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
