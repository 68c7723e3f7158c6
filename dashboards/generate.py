"""Generate tellm's Grafana dashboards (the JSON files beside this script) from one description.

Dashboards as code: panels are declared once here with their PromQL, and the JSON models Grafana
provisions are written from them, so ids, grid positions and datasource references are consistent by
construction. Edit this file, then run

    python dashboards/generate.py          # rewrite dashboards/*.json
    python dashboards/generate.py --check  # exit 1 if the committed JSON is out of date (CI does this)

Every PromQL selector names its scrape job (``job="tellm-controller"`` etc., see docs/metrics.md):
``tellm_inference_request_duration_seconds`` is exported by both the controller (client side) and
the inference service (server side), and the job is what tells them apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The uid of the datasource provisioned by provisioning/datasources/tellm-prometheus.yaml.
DATASOURCE_UID = "tellm-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x

CONTROLLER = 'job="tellm-controller"'
INFERENCE = 'job="tellm-inference"'
POLICY = 'job="tellm-policy"'
RATE = "$__rate_interval"  # Grafana macro: at least four scrape intervals


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False  # stat / bar gauge / table panels show the latest value only
    table: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # Grafana panel type: timeseries, stat, bargauge, heatmap, table, state-timeline
    targets: tuple[Target, ...]
    description: str
    unit: str = "short"
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    thresholds: tuple[tuple[str, float | None], ...] = (("green", None),)
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Annotation:
    name: str
    expr: str
    title: str
    color: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    annotations: tuple[Annotation, ...] = ()


def quantiles(metric: str, selector: str, by: str = "", qs=(0.5, 0.9, 0.99), legend_prefix: str = "") -> tuple:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(Target(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
                        f"{legend_prefix}p{round(q * 100)}{suffix}") for q in qs)


MLU_THRESHOLDS = (("green", None), ("yellow", 0.7), ("red", 0.9))

POLICY_CHANGES = Annotation("Policy changes", f"increase(tellm_policy_changes_total{{{POLICY}}}[$__interval]) > 0",
                            "policy changed", "blue")
POLICY_ROLLBACKS = Annotation("Policy rollbacks",
                              f"sum by (trigger) (increase(tellm_policy_rollbacks_total{{{POLICY}}}[$__interval])) > 0",
                              "policy rolled back ({{trigger}})", "red")
MODEL_RELOADS = Annotation("Model reloads",
                           f"sum by (result) (increase(tellm_inference_model_reloads_total{{{INFERENCE}}}"
                           f"[$__interval])) > 0", "model reload: {{result}}", "purple")

MLU_VS_SP = Panel(
    "MLU: tellm vs shortest-path routing", "timeseries",
    (Target(f"tellm_mlu_ratio{{{CONTROLLER}}}", "tellm (measured)"),
     Target(f"tellm_shortest_path_mlu_ratio{{{CONTROLLER}}}", "shortest path (counterfactual, same traffic)")),
    "Measured maximum link utilisation, and the MLU shortest-path routing would have on the same measured "
    "traffic matrix. The gap is what traffic engineering buys.",
    unit="percentunit", width=24, min=0, thresholds=MLU_THRESHOLDS)

NETWORK = Dashboard(
    "tellm-network", "tellm / Network overview",
    "Maximum link utilisation now and over time against the shortest-path counterfactual, the busiest "
    "links, per-link utilisation and traffic matrix volume (controller metrics).",
    (
        Row("Now", (
            Panel("MLU (measured)", "stat", (Target(f"tellm_mlu_ratio{{{CONTROLLER}}}", instant=True),),
                  "Maximum link utilisation over the last poll interval, from port counters.",
                  unit="percentunit", width=5, height=5, thresholds=MLU_THRESHOLDS),
            Panel("MLU with shortest-path routing", "stat",
                  (Target(f"tellm_shortest_path_mlu_ratio{{{CONTROLLER}}}", instant=True),),
                  "Counterfactual: the MLU of shortest-path routing on the measured traffic matrix.",
                  unit="percentunit", width=5, height=5, thresholds=MLU_THRESHOLDS),
            Panel("MLU reduction vs shortest path", "stat",
                  (Target(f"1 - tellm_mlu_ratio{{{CONTROLLER}}} / tellm_shortest_path_mlu_ratio{{{CONTROLLER}}}",
                          instant=True),),
                  "1 - measured MLU / shortest-path MLU: the fraction of peak load removed (negative: worse).",
                  unit="percentunit", width=5, height=5,
                  thresholds=(("red", None), ("yellow", 0.0), ("green", 0.05))),
            Panel("Router in use", "stat",
                  (Target(f"tellm_routing_info{{{CONTROLLER}}} == 1", "{{router}}", instant=True),),
                  "The router whose routing is installed: model, lp, ecmp, or a fallback such as model:last-good.",
                  width=4, height=5, options={"textMode": "name", "colorMode": "none"}),
            Panel("Traffic matrix volume", "stat",
                  (Target(f"tellm_traffic_matrix_total_bits_per_second{{{CONTROLLER}}}", instant=True),),
                  "Sum of the estimated ingress-egress traffic matrix.", unit="bps", width=5, height=5),
        )),
        Row("Over time", (
            MLU_VS_SP,
            Panel("Traffic matrix volume", "timeseries",
                  (Target(f"tellm_traffic_matrix_total_bits_per_second{{{CONTROLLER}}}", "total demand"),),
                  "Sum of the estimated traffic matrix over time.", unit="bps", width=24, min=0),
            Panel("Stranded and repaired pairs", "timeseries",
                  (Target(f"tellm_stranded_pairs{{{CONTROLLER}}}", "stranded (no live candidate path)"),
                   Target(f"tellm_repaired_pairs{{{CONTROLLER}}}", "repaired (on a repair path)")),
                  "Pairs whose candidate paths are all down under the current link state, and those of them "
                  "routed over a repair path (the shortest surviving path). A gap between the two lines is "
                  "pairs with no path at all: the network is partitioned.", unit="short", width=24, min=0),
        )),
        Row("Links", (
            Panel("Top 10 links by utilisation", "bargauge",
                  (Target(f"topk(10, tellm_link_utilization_ratio{{{CONTROLLER}}})", "{{link}}", instant=True),),
                  "The ten most utilised directed links now.", unit="percentunit", min=0, max=1,
                  thresholds=MLU_THRESHOLDS,
                  options={"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True}),
            Panel("Top 10 links by throughput", "timeseries",
                  (Target(f"topk(10, tellm_link_throughput_bits_per_second{{{CONTROLLER}}})", "{{link}}"),),
                  "Throughput of the ten busiest directed links.", unit="bps", min=0),
            Panel("Per-link utilisation", "heatmap",
                  (Target(f"tellm_link_utilization_ratio{{{CONTROLLER}}}", "{{link}}"),),
                  "One row per directed link, colour = utilisation.", unit="percentunit", width=24, height=12,
                  options={"calculate": False, "yAxis": {"axisPlacement": "left", "unit": "short"},
                           "rowsFrame": {"layout": "auto"},
                           "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                                     "exponent": 0.5, "steps": 64, "reverse": False, "min": 0, "max": 1},
                           "cellGap": 1, "tooltip": {"mode": "single", "yHistogram": False},
                           "legend": {"show": True}}),
        )),
    ),
    annotations=(POLICY_CHANGES, MODEL_RELOADS),
)

CONTROL_LOOP = Dashboard(
    "tellm-control-loop", "tellm / Control loop",
    "The controller's loop: how long an iteration takes, inference round trips seen from both ends, "
    "fallbacks and OpenFlow group updates.",
    (
        Row("Latency", (
            Panel("Control loop duration", "timeseries",
                  quantiles("tellm_control_loop_duration_seconds", CONTROLLER),
                  "One iteration: estimate the traffic matrix, route (inference or fallback), plan and send "
                  "group updates.", unit="s", min=0),
            Panel("Inference round trip: controller vs server (p99)", "timeseries",
                  (Target(f"histogram_quantile(0.99, sum by (le) (rate("
                          f"tellm_inference_request_duration_seconds_bucket{{{CONTROLLER}}}[{RATE}])))",
                          "controller (client side)"),
                   Target(f"histogram_quantile(0.99, sum by (le) (rate("
                          f"tellm_inference_request_duration_seconds_bucket{{{INFERENCE},method=\"Route\"}}"
                          f"[{RATE}])))", "inference server (Route)")),
                  "The same requests timed at both ends; the gap is network plus (de)serialisation.",
                  unit="s", min=0),
            Panel("Control loop iterations per second", "timeseries",
                  (Target(f"sum(rate(tellm_control_loop_duration_seconds_count{{{CONTROLLER}}}[{RATE}]))",
                          "iterations/s"),),
                  "Should equal 1 / poll interval.", unit="short", min=0),
        )),
        Row("Fallbacks and group updates", (
            Panel("Fallbacks by reason", "timeseries",
                  (Target(f"sum by (reason) (rate(tellm_fallback_total{{{CONTROLLER}}}[{RATE}]))", "{{reason}}"),),
                  "Iterations that could not use the configured router (inference unavailable, rejected, "
                  "slow, LP failure) and fell back.", unit="short", min=0),
            Panel("Fallbacks since start", "stat",
                  (Target(f"sum by (reason) (tellm_fallback_total{{{CONTROLLER}}})", "{{reason}}", instant=True),),
                  "Total fallbacks by reason since the controller started.", width=6,
                  thresholds=(("green", None), ("orange", 1))),
            Panel("Group updates since start", "stat",
                  (Target(f"tellm_group_updates_total{{{CONTROLLER}}}", instant=True),),
                  "OpenFlow select groups (re)installed since the controller started.", width=6),
            Panel("Group updates per second", "timeseries",
                  (Target(f"rate(tellm_group_updates_total{{{CONTROLLER}}}[{RATE}])", "groups/s"),),
                  "Select groups (re)installed per second (make-before-break updates).", unit="short", min=0),
        )),
    ),
)

INFERENCE_DASH = Dashboard(
    "tellm-inference", "tellm / Inference service",
    "The gRPC inference service: request rate, errors, latency by method, model and execution provider.",
    (
        Row("Model", (
            Panel("Execution provider", "stat",
                  (Target(f"tellm_inference_provider_info{{{INFERENCE}}} == 1", "{{provider}}", instant=True),),
                  "ONNX Runtime execution provider running the model (CUDA or CPU).", width=6, height=5,
                  options={"textMode": "name", "colorMode": "none"}),
            Panel("Model being served", "table",
                  (Target(f"tellm_model_info{{{INFERENCE}}} == 1", instant=True, table=True),),
                  "Version, provider, file hash and path of the model in service.", width=12, height=5,
                  options={"showHeader": True}),
            Panel("Registered topologies", "stat", (Target(f"tellm_inference_topologies{{{INFERENCE}}}",
                                                           instant=True),),
                  "Topologies registered by controllers.", width=3, height=5),
            Panel("Model load time", "stat", (Target(f"tellm_inference_model_load_seconds{{{INFERENCE}}}",
                                                     instant=True),),
                  "Time the current model took to load.", unit="s", width=3, height=5),
        )),
        Row("Traffic", (
            Panel("Requests per second by method and code", "timeseries",
                  (Target(f"sum by (method, code) (rate(tellm_inference_requests_total{{{INFERENCE}}}[{RATE}]))",
                          "{{method}} {{code}}"),),
                  "RPCs handled per second, by gRPC method and status code.", unit="reqps", min=0),
            Panel("Error ratio", "timeseries",
                  (Target(f"sum(rate(tellm_inference_requests_total{{{INFERENCE},code!=\"OK\"}}[{RATE}])) / "
                          f"sum(rate(tellm_inference_requests_total{{{INFERENCE}}}[{RATE}]))", "errors / requests"),),
                  "Fraction of RPCs that did not return OK (bad input, stale topology, internal errors).",
                  unit="percentunit", min=0, thresholds=(("green", None), ("red", 0.01))),
            Panel("Server latency by method", "timeseries",
                  quantiles("tellm_inference_request_duration_seconds", INFERENCE, by="method", qs=(0.5, 0.99)),
                  "Server-side handling time per RPC (p50, p99) by method.", unit="s", min=0),
            Panel("Model reloads", "timeseries",
                  (Target(f"sum by (result) (increase(tellm_inference_model_reloads_total{{{INFERENCE}}}[{RATE}]))",
                          "{{result}}"),),
                  "Model loads and hot reloads by result.", unit="short", min=0),
        )),
    ),
    annotations=(MODEL_RELOADS,),
)

POLICY_DASH = Dashboard(
    "tellm-policy", "tellm / Policy",
    "The operator objective in force, its changes and rollbacks (policy daemon), against the MLU they "
    "produce.",
    (
        Row("Objective", (
            Panel("Current objective", "stat",
                  (Target(f"tellm_policy_info{{{POLICY}}} == 1", "{{policy}}", instant=True),),
                  "The policy (operator objective) the daemon has in force.", width=8, height=5,
                  options={"textMode": "name", "colorMode": "none"}),
            Panel("Policy changes since start", "stat",
                  (Target(f"tellm_policy_changes_total{{{POLICY}}}", instant=True),),
                  "Policy changes applied.", width=8, height=5),
            Panel("Rollbacks since start", "stat",
                  (Target(f"sum by (trigger) (tellm_policy_rollbacks_total{{{POLICY}}})", "{{trigger}}",
                          instant=True),),
                  "Policy changes rolled back, by trigger (automatic or requested).", width=8, height=5,
                  thresholds=(("green", None), ("orange", 1))),
            Panel("Objective over time", "state-timeline",
                  (Target(f"tellm_policy_info{{{POLICY}}} == 1", "{{policy}}"),),
                  "Which objective was in force when.", width=24, height=5,
                  options={"showValue": "never", "mergeValues": True}),
        )),
        Row("Effect", (
            MLU_VS_SP,
            Panel("Policy changes and rollbacks", "timeseries",
                  (Target(f"increase(tellm_policy_changes_total{{{POLICY}}}[{RATE}])", "changes"),
                   Target(f"sum by (trigger) (increase(tellm_policy_rollbacks_total{{{POLICY}}}[{RATE}]))",
                          "rollbacks ({{trigger}})")),
                  "Changes and rollbacks per rate window.", unit="short", min=0),
            Panel("Actions refused by guardrails", "timeseries",
                  (Target(f"sum by (tool) (increase(tellm_policy_actions_rejected_total{{{POLICY}}}[{RATE}]))",
                          "{{tool}}"),),
                  "Policy actions the guardrails refused (rate limit, bounds, what-if check), by tool.",
                  unit="short", min=0),
        )),
    ),
    annotations=(POLICY_CHANGES, POLICY_ROLLBACKS),
)

DASHBOARDS = (NETWORK, CONTROL_LOOP, INFERENCE_DASH, POLICY_DASH)


# ---------------------------------------------------------------------------------------------- JSON
def _thresholds(steps) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def _target(t: Target, ref: str) -> dict:
    out = {"datasource": DATASOURCE, "refId": ref, "expr": t.expr, "legendFormat": t.legend or "__auto",
           "range": not t.instant, "instant": t.instant, "editorMode": "code"}
    if t.table:
        out["format"] = "table"
    return out


def _panel(p: Panel, pid: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": p.unit, "thresholds": _thresholds(p.thresholds), "color": {"mode": "thresholds"}}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    if p.kind in ("timeseries", "state-timeline"):
        defaults["color"] = {"mode": "palette-classic"}
    if p.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False}
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}} \
        if p.kind in ("stat", "bargauge") else {}
    if p.kind == "timeseries":
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    options.update(p.options)
    return {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "datasource": DATASOURCE,
        "targets": [_target(t, chr(ord("A") + i)) for i, t in enumerate(p.targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
    }


def dashboard_json(d: Dashboard) -> dict:
    panels, pid, y = [], 1, 0
    for row in d.rows:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y, x, line_h = pid + 1, y + 1, 0, 0
        for p in row.panels:
            if x + p.width > 24:  # wrap to the next line of the grid
                x, y, line_h = 0, y + line_h, 0
            panels.append(_panel(p, pid, x, y))
            pid, x, line_h = pid + 1, x + p.width, max(line_h, p.height)
        y += line_h
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
               "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
               "type": "dashboard"}
    annotations = [builtin] + [
        {"datasource": DATASOURCE, "enable": True, "hide": False, "iconColor": a.color, "name": a.name,
         "expr": a.expr, "step": "5s", "titleFormat": a.title, "textFormat": "", "useValueForTime": False}
        for a in d.annotations]
    return {
        "uid": d.uid, "title": d.title, "description": d.description, "tags": ["tellm"],
        "editable": True, "graphTooltip": 1, "refresh": "5s", "schemaVersion": SCHEMA_VERSION, "version": 1,
        "time": {"from": "now-15m", "to": "now"}, "timepicker": {}, "timezone": "utc",
        "templating": {"list": []}, "annotations": {"list": annotations}, "links": [
            {"type": "dashboards", "tags": ["tellm"], "title": "tellm", "asDropdown": True, "includeVars": False,
             "keepTime": True}],
        "panels": panels,
    }


def render(d: Dashboard) -> str:
    return json.dumps(dashboard_json(d), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write (or --check) tellm's Grafana dashboard JSON files.")
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed file differs from the generator")
    ap.add_argument("--out", type=Path, default=HERE, help="directory for the JSON files")
    args = ap.parse_args(argv)
    stale = []
    for d in DASHBOARDS:
        path = args.out / f"{d.uid}.json"
        text = render(d)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
