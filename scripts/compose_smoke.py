"""Smoke test of a running compose stack with real switches: Mininet on this host, controller in a container.

Builds the Mininet network of the controller's topology (default deploy/topology-example.yaml) on this
host, connects it to the controller container (127.0.0.1:6653), waits until every switch is
connected and every host pair answers ping, sends UDP traffic (a gravity traffic matrix at --load),
then evaluates every query of the Grafana dashboards through the compose Prometheus and prints which
return data. Exit status 0 when every Prometheus target is up and the controller routed with the
model through the inference service; 1 otherwise; 2 when the testbed cannot be built.

Run as root (Open vSwitch and Mininet: `bash scripts/bootstrap.sh` installs them) from anywhere,
with the stack up (docs/deployment.md):
    python scripts/compose_smoke.py [--prometheus http://127.0.0.1:9090] [--seconds 35]
Event-driven panels (fallbacks, errors, model reloads, policy changes) are empty in a healthy stack.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DashboardQuery:
    where: str  # dashboard file stem: panel title/refId, or annotation name
    expr: str
    annotation: bool


def dashboard_queries(folder: Path) -> list[DashboardQuery]:
    """Every PromQL expression of the dashboards' panels (rows included) and annotations."""
    out = []
    for f in sorted(folder.glob("*.json")):
        dash = json.loads(f.read_text())
        panels = []
        for p in dash.get("panels", []):
            panels.append(p)
            panels.extend(p.get("panels", []) if p.get("type") == "row" else [])
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append(DashboardQuery(f"{f.stem}: {p.get('title')}/{t.get('refId')}", t["expr"], False))
        for a in dash.get("annotations", {}).get("list", []):
            if a.get("expr") and not a.get("builtIn"):
                out.append(DashboardQuery(f"{f.stem}: annotation {a.get('name')}", a["expr"], True))
    return out


def grafana_expr(expr: str, scrape_interval_seconds: float) -> str:
    """Grafana's interval macros as Grafana fills them for this scrape interval."""
    rate = f"{int(4 * scrape_interval_seconds)}s"
    return expr.replace("$__rate_interval", rate).replace("$__interval", f"{int(2 * scrape_interval_seconds)}s")


class Prometheus:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def get(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 (operator-given URL)
            return json.loads(reply.read())["data"]

    def query(self, expr: str, range_start: float | None = None) -> list:
        if range_start is None:
            return self.get("query", query=expr)["result"]
        return self.get("query_range", query=expr, start=range_start, end=time.time(), step=1)["result"]


def controller_state(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 (operator-given URL)
            return json.loads(reply.read())
    except (OSError, ValueError):
        return None


def wait_for(check, timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        time.sleep(0.5)


def run_traffic(args, workdir: Path) -> float:
    """Testbed + traffic for args.seconds; returns when traffic started (epoch seconds)."""
    from tellm.mininet_scenarios.net import Testbed, mininet_lock
    from tellm.mininet_scenarios.orchestrate import wait_all_reachable
    from tellm.mininet_scenarios.scenarios import from_yaml
    from tellm.mininet_scenarios.traffic import TrafficRun

    scenario = from_yaml(args.topology, load=args.load)
    n = len(scenario.switches)
    with mininet_lock(timeout_seconds=600, on_wait=lambda: print("waiting for the Mininet lock", flush=True)):
        with Testbed.start(scenario, of_port=args.of_port) as tb:
            wait_for(lambda: len(((controller_state(args.state_url) or {}).get("topology") or {})
                                 .get("connected_switches") or []) == n, 60, f"all {n} switches to connect")
            wait_all_reachable(tb, 60)
            run = TrafficRun(tb, scenario.default_tm().demand_bps, args.seconds, workdir, flows=32)
            try:
                start = run.start()
                print(f"traffic for {args.seconds:.0f} s at load {args.load}", flush=True)
                run.wait_senders()
                run.stop_receivers()
            finally:
                run.kill()
    return start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090", help="the compose Prometheus")
    ap.add_argument("--state-url", default="http://127.0.0.1:9100/state", help="the controller's GET /state")
    ap.add_argument("--of-port", type=int, default=6653, help="the controller's published OpenFlow port")
    ap.add_argument("--topology", type=Path, default=ROOT / "deploy" / "topology-example.yaml",
                    help="the topology the controller container runs (TELLM_TOPOLOGY)")
    ap.add_argument("--dashboards", type=Path, default=ROOT / "dashboards")
    ap.add_argument("--seconds", type=float, default=35, help="traffic before querying (rate windows fill)")
    ap.add_argument("--load", type=float, default=0.8, help="traffic matrix scaled to this shortest-path MLU")
    ap.add_argument("--scrape-interval", type=float, default=5.0,
                    help="Prometheus' scrape interval in seconds (deploy/prometheus/prometheus.yml)")
    args = ap.parse_args()

    prom = Prometheus(args.prometheus)
    try:
        prom.query("up")
    except OSError as exc:
        print(f"error: Prometheus does not answer at {args.prometheus} ({exc}); is the stack up?", file=sys.stderr)
        return 2
    if controller_state(args.state_url) is None:
        print(f"error: the controller does not answer at {args.state_url}; is the stack up?", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="tellm-compose-smoke-") as tmp:
        try:
            t0 = run_traffic(args, Path(tmp))
        except Exception as exc:  # noqa: BLE001 (an operator tool: one clear line, not a traceback)
            print(f"error: testbed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2

    empty = 0
    for q in dashboard_queries(args.dashboards):
        result = prom.query(grafana_expr(q.expr, args.scrape_interval), t0 - 120 if q.annotation else None)
        values = [s["value"][1] for s in result if "value" in s] + [v[1] for s in result for v in s.get("values", [])]
        ok = any(math.isfinite(float(v)) for v in values)
        empty += not ok
        print(f"{'data ' if ok else 'EMPTY'} {q.where}")
    print(f"{empty} queries without data")

    up = {s["metric"]["job"]: s["value"][1] == "1" for s in prom.query("up")}
    routed = [s["metric"].get("router") for s in prom.query("tellm_routing_info == 1")]
    mlu = {s["metric"].get("__name__"): float(s["value"][1])
           for s in prom.query('{__name__=~"tellm_(shortest_path_)?mlu_ratio"}')}
    print("targets up:", up)
    print("routing with:", routed, "MLU:", mlu)
    problems = [f"target {job} is down" for job, ok in up.items() if not ok]
    if "model" not in routed:
        problems.append(f"the controller does not route with the model (routers: {routed or 'none'})")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
