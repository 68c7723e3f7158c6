"""Generate tellm's Grafana dashboards (the JSON files beside this script) with grafana-foundation-sdk.

Dashboards as code: panels are declared once here, with their PromQL, as typed builders from Grafana's
own foundation SDK, and the JSON models Grafana provisions are written from them, so ids, grid
positions and datasource references are consistent by construction. Edit this file, then run

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import (bargauge, common, dashboard, heatmap, prometheus, stat, statetimeline,
                                             table, timeseries)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (AxisPlacement, BarGaugeDisplayMode, BigValueColorMode,
                                                  BigValueTextMode, GraphDrawStyle, HeatmapCellLayout,
                                                  LegendDisplayMode, LegendPlacement, SortOrder, TooltipDisplayMode,
                                                  VisibilityMode, VizOrientation)
from grafana_foundation_sdk.models.dashboard import (DashboardCursorSync, DashboardLinkType, DataSourceRef,
                                                     FieldColorModeId, Threshold, ThresholdsMode)
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

HERE = Path(__file__).resolve().parent

#: The uid of the datasource provisioned by provisioning/datasources/tellm-prometheus.yaml.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="tellm-prometheus")

CONTROLLER = 'job="tellm-controller"'
INFERENCE = 'job="tellm-inference"'
POLICY = 'job="tellm-policy"'
RATE = "$__rate_interval"  # Grafana macro: at least four scrape intervals
ANNOTATION_STEP = "5s"  # evaluation step of the annotation queries (the controller's default poll interval)

Thresholds = Sequence[tuple[str, float | None]]
GREEN: Thresholds = (("green", None),)
MLU_THRESHOLDS: Thresholds = (("green", None), ("yellow", 0.7), ("red", 0.9))
ANY_IS_BAD: Thresholds = (("green", None), ("orange", 1))


# ------------------------------------------------------------------------------------------ builders
def q(expr: str, legend: str = "", *, instant: bool = False, as_table: bool = False) -> prometheus.Dataquery:
    """One PromQL target; stat, bar gauge and table panels read the latest value only (instant)."""
    t = (prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").editor_mode(QueryEditorMode.CODE)
         .datasource(DATASOURCE))
    t = t.instant() if instant else t.range()
    return t.format(PromQueryFormat.TABLE) if as_table else t


def quantiles(metric: str, selector: str, by: str = "", qs=(0.5, 0.9, 0.99)) -> list[prometheus.Dataquery]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [q(f"histogram_quantile({p}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
              f"p{round(p * 100)}{suffix}") for p in qs]


def _panel(builder, title: str, description: str, targets: Sequence[prometheus.Dataquery], *, unit: str = "short",
           width: int = 12, height: int = 8, min_val: float | None = None, max_val: float | None = None,
           thresholds: Thresholds = GREEN, color: FieldColorModeId = FieldColorModeId.THRESHOLDS):
    """What every panel shares: title, size, datasource, targets (refIds A, B, ...), unit, thresholds."""
    p = (builder.title(title).description(description).span(width).height(height).datasource(DATASOURCE)
         .unit(unit).color_scheme(dashboard.FieldColor().mode(color))
         .thresholds(dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
                     .steps([Threshold(value=v, color=c) for c, v in thresholds])))
    if min_val is not None:
        p = p.min(min_val)
    if max_val is not None:
        p = p.max(max_val)
    for i, t in enumerate(targets):
        p = p.with_target(t.ref_id(chr(ord("A") + i)))
    return p


def _last_value() -> common.ReduceDataOptions:
    return common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def _legend() -> common.VizLegendOptions:
    return common.VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM) \
        .show_legend(True)


def graph(title: str, description: str, *targets: prometheus.Dataquery, **kw) -> timeseries.Panel:
    return (_panel(timeseries.Panel(), title, description, targets, color=FieldColorModeId.PALETTE_CLASSIC, **kw)
            .draw_style(GraphDrawStyle.LINE).line_width(1).fill_opacity(10).show_points(VisibilityMode.NEVER)
            .span_nulls(False).legend(_legend())
            .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))


def number(title: str, description: str, *targets: prometheus.Dataquery, **kw) -> stat.Panel:
    return _panel(stat.Panel(), title, description, targets, **kw).reduce_options(_last_value())


def label(title: str, description: str, *targets: prometheus.Dataquery, **kw) -> stat.Panel:
    """A stat panel that shows the series' legend (the label of an info metric) instead of its value."""
    return number(title, description, *targets, **kw).text_mode(BigValueTextMode.NAME) \
        .color_mode(BigValueColorMode.NONE)


def bars(title: str, description: str, *targets: prometheus.Dataquery, **kw) -> bargauge.Panel:
    return (_panel(bargauge.Panel(), title, description, targets, **kw).reduce_options(_last_value())
            .display_mode(BarGaugeDisplayMode.GRADIENT).orientation(VizOrientation.HORIZONTAL).show_unfilled(True))


def link_heatmap(title: str, description: str, *targets: prometheus.Dataquery, **kw) -> heatmap.Panel:
    """One row per series (no bucketing), coloured by value between 0 and 1."""
    return (_panel(heatmap.Panel(), title, description, targets, **kw)
            .calculate(False).y_axis(heatmap.YAxisConfig().axis_placement(AxisPlacement.LEFT).unit("short"))
            .rows_frame(heatmap.RowsHeatmapOptions().layout(HeatmapCellLayout.AUTO))
            .color(heatmap.HeatmapColorOptions().mode(HeatmapColorMode.SCHEME).scheme("Oranges").fill("dark-orange")
                   .scale(HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64).reverse(False).min(0).max(1))
            # Tooltip on the hovered cell, without the y-axis histogram.
            .cell_gap(1).mode(TooltipDisplayMode.SINGLE).hide_y_histogram().show_legend())


def info_table(title: str, description: str, *targets: prometheus.Dataquery, **kw) -> table.Panel:
    return _panel(table.Panel(), title, description, targets, **kw).show_header(True)


def timeline(title: str, description: str, *targets: prometheus.Dataquery, **kw) -> statetimeline.Panel:
    return (_panel(statetimeline.Panel(), title, description, targets, color=FieldColorModeId.PALETTE_CLASSIC, **kw)
            .show_value(VisibilityMode.NEVER).merge_values(True)
            .legend(_legend()))


@dataclass(frozen=True)
class Annotation:
    name: str
    expr: str
    title: str  # Grafana's title format: {{label}} is replaced by the series' label
    color: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[tuple[str, Callable[[], list]], ...]  # (row title, function returning fresh panel builders)
    annotations: tuple[Annotation, ...] = ()


def build(d: Dashboard) -> dict:
    """The JSON model of one dashboard: each row, then its panels laid left to right on Grafana's 24-column grid
    (the SDK places them), ids numbered in order."""
    b = (dashboard.Dashboard(d.title).uid(d.uid).description(d.description).tags(["tellm"]).editable()
         .tooltip(DashboardCursorSync.CROSSHAIR).refresh("5s").version(1).time("now-15m", "now").timezone("utc")
         .link(dashboard.DashboardLink("tellm").type(DashboardLinkType.DASHBOARDS).tags(["tellm"])
               .as_dropdown(True).include_vars(False).keep_time(True)))
    pid = 1
    for title, panels in d.rows:
        # Panels of an expanded row follow it on the dashboard (Grafana reads nested panels only when collapsed).
        b, pid = b.with_row(dashboard.Row(title).id(pid)), pid + 1
        for p in panels():
            b, pid = b.with_panel(p.id(pid)), pid + 1
    for a in d.annotations:
        b = b.annotation(dashboard.AnnotationQuery().name(a.name).datasource(DATASOURCE).enable(True).hide(False)
                         .icon_color(a.color).expr(a.expr))
    model = json.loads(json.dumps(b.build(), cls=JSONEncoder))
    model["annotations"].setdefault("list", [])  # the SDK leaves the object empty when there is no annotation
    # The SDK's annotation type has no field for the Prometheus annotation's step and title format.
    for entry, a in zip(model["annotations"]["list"], d.annotations, strict=True):
        entry.update({"step": ANNOTATION_STEP, "titleFormat": a.title, "textFormat": "", "useValueForTime": False})
    return model


# ---------------------------------------------------------------------------------------- dashboards
POLICY_CHANGES = Annotation("Policy changes", f"increase(tellm_policy_changes_total{{{POLICY}}}[$__interval]) > 0",
                            "policy changed", "blue")
POLICY_ROLLBACKS = Annotation("Policy rollbacks",
                              f"sum by (trigger) (increase(tellm_policy_rollbacks_total{{{POLICY}}}[$__interval])) > 0",
                              "policy rolled back ({{trigger}})", "red")
MODEL_RELOADS = Annotation("Model reloads",
                           f"sum by (result) (increase(tellm_inference_model_reloads_total{{{INFERENCE}}}"
                           f"[$__interval])) > 0", "model reload: {{result}}", "purple")


def mlu_vs_shortest_path() -> timeseries.Panel:
    return graph("MLU: tellm vs shortest-path routing",
                 "Measured maximum link utilisation, and the MLU shortest-path routing would have on the same "
                 "measured traffic matrix. The gap is what traffic engineering buys.",
                 q(f"tellm_mlu_ratio{{{CONTROLLER}}}", "tellm (measured)"),
                 q(f"tellm_shortest_path_mlu_ratio{{{CONTROLLER}}}", "shortest path (counterfactual, same traffic)"),
                 unit="percentunit", width=24, min_val=0, thresholds=MLU_THRESHOLDS)


NETWORK = Dashboard(
    "tellm-network", "tellm / Network overview",
    "Maximum link utilisation now and over time against the shortest-path counterfactual, the busiest "
    "links, per-link utilisation and traffic matrix volume (controller metrics).",
    (
        ("Now", lambda: [
            number("MLU (measured)", "Maximum link utilisation over the last poll interval, from port counters.",
                   q(f"tellm_mlu_ratio{{{CONTROLLER}}}", instant=True),
                   unit="percentunit", width=5, height=5, thresholds=MLU_THRESHOLDS),
            number("MLU with shortest-path routing",
                   "Counterfactual: the MLU of shortest-path routing on the measured traffic matrix.",
                   q(f"tellm_shortest_path_mlu_ratio{{{CONTROLLER}}}", instant=True),
                   unit="percentunit", width=5, height=5, thresholds=MLU_THRESHOLDS),
            number("MLU reduction vs shortest path",
                   "1 - measured MLU / shortest-path MLU: the fraction of peak load removed (negative: worse).",
                   q(f"1 - tellm_mlu_ratio{{{CONTROLLER}}} / tellm_shortest_path_mlu_ratio{{{CONTROLLER}}}",
                     instant=True),
                   unit="percentunit", width=5, height=5, thresholds=(("red", None), ("yellow", 0.0), ("green", 0.05))),
            label("Router in use",
                 "The router whose routing is installed: model, lp, ecmp, or a fallback such as model:last-good.",
                 q(f"tellm_routing_info{{{CONTROLLER}}} == 1", "{{router}}", instant=True), width=4, height=5),
            number("Traffic matrix volume", "Sum of the estimated ingress-egress traffic matrix.",
                   q(f"tellm_traffic_matrix_total_bits_per_second{{{CONTROLLER}}}", instant=True),
                   unit="bps", width=5, height=5),
        ]),
        ("Over time", lambda: [
            mlu_vs_shortest_path(),
            graph("Traffic matrix volume", "Sum of the estimated traffic matrix over time.",
                  q(f"tellm_traffic_matrix_total_bits_per_second{{{CONTROLLER}}}", "total demand"),
                  unit="bps", width=24, min_val=0),
            graph("Stranded and repaired pairs",
                  "Pairs whose candidate paths are all down under the current link state, and those of them "
                  "routed over a repair path (the shortest surviving path). A gap between the two lines is "
                  "pairs with no path at all: the network is partitioned.",
                  q(f"tellm_stranded_pairs{{{CONTROLLER}}}", "stranded (no live candidate path)"),
                  q(f"tellm_repaired_pairs{{{CONTROLLER}}}", "repaired (on a repair path)"),
                  unit="short", width=24, min_val=0),
        ]),
        ("Links", lambda: [
            bars("Top 10 links by utilisation", "The ten most utilised directed links now.",
                 q(f"topk(10, tellm_link_utilization_ratio{{{CONTROLLER}}})", "{{link}}", instant=True),
                 unit="percentunit", min_val=0, max_val=1, thresholds=MLU_THRESHOLDS),
            graph("Top 10 links by throughput", "Throughput of the ten busiest directed links.",
                  q(f"topk(10, tellm_link_throughput_bits_per_second{{{CONTROLLER}}})", "{{link}}"),
                  unit="bps", min_val=0),
            link_heatmap("Per-link utilisation", "One row per directed link, colour = utilisation.",
                         q(f"tellm_link_utilization_ratio{{{CONTROLLER}}}", "{{link}}"),
                         unit="percentunit", width=24, height=12),
        ]),
    ),
    annotations=(POLICY_CHANGES, MODEL_RELOADS),
)

CONTROL_LOOP = Dashboard(
    "tellm-control-loop", "tellm / Control loop",
    "The controller's loop: how long an iteration takes, inference round trips seen from both ends, "
    "fallbacks and OpenFlow group updates.",
    (
        ("Latency", lambda: [
            graph("Control loop duration",
                  "One iteration: estimate the traffic matrix, route (inference or fallback), plan and send "
                  "group updates.",
                  *quantiles("tellm_control_loop_duration_seconds", CONTROLLER), unit="s", min_val=0),
            graph("Inference round trip: controller vs server (p99)",
                  "The same requests timed at both ends; the gap is network plus (de)serialisation.",
                  q(f"histogram_quantile(0.99, sum by (le) (rate("
                    f"tellm_inference_request_duration_seconds_bucket{{{CONTROLLER}}}[{RATE}])))",
                    "controller (client side)"),
                  q(f"histogram_quantile(0.99, sum by (le) (rate("
                    f"tellm_inference_request_duration_seconds_bucket{{{INFERENCE},method=\"Route\"}}[{RATE}])))",
                    "inference server (Route)"),
                  unit="s", min_val=0),
            graph("Control loop iterations per second", "Should equal 1 / poll interval.",
                  q(f"sum(rate(tellm_control_loop_duration_seconds_count{{{CONTROLLER}}}[{RATE}]))", "iterations/s"),
                  min_val=0),
            graph("Routing age and late intervals",
                  "Age of the installed routing (since its input was taken); intervals whose work overran the poll "
                  "interval, intervals that found the router still busy, and late routings dropped because the "
                  "network changed meanwhile (per second).",
                  q(f"tellm_routing_age_seconds{{{CONTROLLER}}}", "routing age (s)"),
                  q(f"rate(tellm_control_interval_overruns_total{{{CONTROLLER}}}[{RATE}])", "overruns/s"),
                  q(f"rate(tellm_router_busy_intervals_total{{{CONTROLLER}}}[{RATE}])", "router busy/s"),
                  q(f"rate(tellm_routings_discarded_total{{{CONTROLLER}}}[{RATE}])", "dropped routings/s"),
                  min_val=0),
        ]),
        ("Fallbacks and group updates", lambda: [
            graph("Fallbacks by reason",
                  "Iterations that could not use the configured router (inference unavailable, rejected, "
                  "slow, LP failure) and fell back.",
                  q(f"sum by (reason) (rate(tellm_fallback_total{{{CONTROLLER}}}[{RATE}]))", "{{reason}}"),
                  min_val=0),
            number("Fallbacks since start", "Total fallbacks by reason since the controller started.",
                   q(f"sum by (reason) (tellm_fallback_total{{{CONTROLLER}}})", "{{reason}}", instant=True),
                   width=6, thresholds=ANY_IS_BAD),
            number("Group updates since start", "OpenFlow select groups (re)installed since the controller started.",
                   q(f"tellm_group_updates_total{{{CONTROLLER}}}", instant=True), width=6),
            graph("Group updates per second", "Select groups (re)installed per second (make-before-break updates).",
                  q(f"rate(tellm_group_updates_total{{{CONTROLLER}}}[{RATE}])", "groups/s"), min_val=0),
            graph("Pairs held by the weight deadband",
                  "Pairs whose installed split the last plan kept because the router's new one was within the "
                  "deadband (fewer group rewrites).",
                  q(f"tellm_deadband_pairs{{{CONTROLLER}}}", "pairs"), min_val=0),
            graph("OpenFlow update messages per second",
                  "Label, group and classification messages of update plans sent to the switches (barriers not "
                  "counted).", q(f"rate(tellm_openflow_messages_total{{{CONTROLLER}}}[{RATE}])", "messages/s"),
                  min_val=0),
            graph("OpenFlow update bytes per second", "Bytes of those messages.",
                  q(f"rate(tellm_openflow_bytes_total{{{CONTROLLER}}}[{RATE}])", "bytes/s"), unit="Bps", min_val=0),
            graph("Rules per switch", "Flow rules plus groups on the switch that holds the most, and the most any "
                  "routing of the candidate paths needs on one switch (every path carrying traffic).",
                  q(f"tellm_switch_rules_max{{{CONTROLLER}}}", "installed (busiest switch)"),
                  q(f"tellm_switch_rules_bound{{{CONTROLLER}}}", "bound (every candidate path active)"), min_val=0),
        ]),
    ),
)

INFERENCE_DASH = Dashboard(
    "tellm-inference", "tellm / Inference service",
    "The gRPC inference service: request rate, errors, latency by method, model and execution provider.",
    (
        ("Model", lambda: [
            label("Execution provider", "ONNX Runtime execution provider running the model (CUDA or CPU).",
                 q(f"tellm_inference_provider_info{{{INFERENCE}}} == 1", "{{provider}}", instant=True),
                 width=6, height=5),
            info_table("Model being served", "Version, provider, file hash and path of the model in service.",
                       q(f"tellm_model_info{{{INFERENCE}}} == 1", instant=True, as_table=True), width=12, height=5),
            number("Registered topologies", "Topologies registered by controllers.",
                   q(f"tellm_inference_topologies{{{INFERENCE}}}", instant=True), width=3, height=5),
            number("Model load time", "Time the current model took to load.",
                   q(f"tellm_inference_model_load_seconds{{{INFERENCE}}}", instant=True), unit="s", width=3, height=5),
        ]),
        ("Traffic", lambda: [
            graph("Requests per second by method and code", "RPCs handled per second, by gRPC method and status code.",
                  q(f"sum by (method, code) (rate(tellm_inference_requests_total{{{INFERENCE}}}[{RATE}]))",
                    "{{method}} {{code}}"),
                  unit="reqps", min_val=0),
            graph("Error ratio",
                  "Fraction of RPCs that did not return OK (bad input, stale topology, internal errors).",
                  q(f"sum(rate(tellm_inference_requests_total{{{INFERENCE},code!=\"OK\"}}[{RATE}])) / "
                    f"sum(rate(tellm_inference_requests_total{{{INFERENCE}}}[{RATE}]))", "errors / requests"),
                  unit="percentunit", min_val=0, thresholds=(("green", None), ("red", 0.01))),
            graph("Server latency by method", "Server-side handling time per RPC (p50, p99) by method.",
                  *quantiles("tellm_inference_request_duration_seconds", INFERENCE, by="method", qs=(0.5, 0.99)),
                  unit="s", min_val=0),
            graph("Model reloads", "Model loads and hot reloads by result.",
                  q(f"sum by (result) (increase(tellm_inference_model_reloads_total{{{INFERENCE}}}[{RATE}]))",
                    "{{result}}"),
                  min_val=0),
        ]),
        ("Per-topology graphs", lambda: [
            info_table("Topology graphs", "Graph specialised to each registered topology: provider and layout.",
                       q(f"tellm_inference_topology_head_info{{{INFERENCE}}} == 1", instant=True, as_table=True),
                       width=12, height=6),
            number("Graph build time", "Time each topology's specialised graph took to build at registration.",
                   q(f"tellm_inference_topology_head_build_seconds{{{INFERENCE}}}", "{{topology}}", instant=True),
                   unit="s", width=6, height=6),
            graph("Requests per model run", "Route requests served by one batched model run (p50, p99).",
                  *quantiles("tellm_inference_batch_size", INFERENCE, qs=(0.5, 0.99)), min_val=0,
                  width=6, height=6),
        ]),
    ),
    annotations=(MODEL_RELOADS,),
)

POLICY_DASH = Dashboard(
    "tellm-policy", "tellm / Policy",
    "The operator objective in force, its changes and rollbacks (policy daemon), against the MLU they "
    "produce.",
    (
        ("Objective", lambda: [
            label("Current objective", "The policy (operator objective) the daemon has in force.",
                 q(f"tellm_policy_info{{{POLICY}}} == 1", "{{policy}}", instant=True), width=8, height=5),
            number("Policy changes since start", "Policy changes applied.",
                   q(f"tellm_policy_changes_total{{{POLICY}}}", instant=True), width=8, height=5),
            number("Rollbacks since start", "Policy changes rolled back, by trigger (automatic or requested).",
                   q(f"sum by (trigger) (tellm_policy_rollbacks_total{{{POLICY}}})", "{{trigger}}", instant=True),
                   width=8, height=5, thresholds=ANY_IS_BAD),
            timeline("Objective over time", "Which objective was in force when.",
                     q(f"tellm_policy_info{{{POLICY}}} == 1", "{{policy}}"), width=24, height=5),
        ]),
        ("Effect", lambda: [
            mlu_vs_shortest_path(),
            graph("Policy changes and rollbacks", "Changes and rollbacks per rate window.",
                  q(f"increase(tellm_policy_changes_total{{{POLICY}}}[{RATE}])", "changes"),
                  q(f"sum by (trigger) (increase(tellm_policy_rollbacks_total{{{POLICY}}}[{RATE}]))",
                    "rollbacks ({{trigger}})"),
                  min_val=0),
            graph("Actions refused by guardrails",
                  "Policy actions the guardrails refused (rate limit, bounds, what-if check), by tool.",
                  q(f"sum by (tool) (increase(tellm_policy_actions_rejected_total{{{POLICY}}}[{RATE}]))", "{{tool}}"),
                  min_val=0),
        ]),
    ),
    annotations=(POLICY_CHANGES, POLICY_ROLLBACKS),
)

DASHBOARDS = (NETWORK, CONTROL_LOOP, INFERENCE_DASH, POLICY_DASH)


def render(d: Dashboard) -> str:
    return json.dumps(build(d), indent=2, ensure_ascii=False) + "\n"


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
