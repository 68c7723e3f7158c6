"""The Grafana dashboards are valid JSON models whose panels, datasources and PromQL are consistent
with the provisioning files and docs/metrics.md (structure only; the live check of every query
against a real Prometheus is tests/integration/test_observability_prometheus.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from .._observability import (DASHBOARD_DIR, ROOT, all_panels, dashboard_files, dashboard_queries, exporter_jobs,
                             jobs, metric_names, metrics_table, substitute_grafana_macros)

PROVISIONING = DASHBOARD_DIR / "provisioning"
GRAFANA_BUILTIN = {"type": "grafana", "uid": "-- Grafana --"}
PANEL_TYPES = {"row", "timeseries", "stat", "bargauge", "heatmap", "table", "state-timeline"}


def _datasource_uid() -> str:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "tellm-prometheus.yaml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    return ds["uid"]


def _dashboards() -> list[tuple[str, dict]]:
    files = dashboard_files()
    assert len(files) == 4, [f.name for f in files]
    return [(f.name, json.loads(f.read_text())) for f in files]


def test_generated_json_is_up_to_date():
    r = subprocess.run([sys.executable, str(DASHBOARD_DIR / "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dashboard_models_are_valid():
    uids = set()
    for name, d in _dashboards():
        for key in ("uid", "title", "panels", "schemaVersion", "time", "annotations", "templating"):
            assert key in d, f"{name}: no {key!r}"
        assert d["uid"] not in uids, f"{name}: uid {d['uid']} used twice"
        uids.add(d["uid"])
        assert len(d["uid"]) <= 40, "Grafana uids are at most 40 characters"
        panels = all_panels(d)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {sorted(ids)}"
        cells: dict[tuple[int, int], int] = {}
        for p in panels:
            assert p["type"] in PANEL_TYPES, f"{name}/{p['title']}: unknown panel type {p['type']}"
            g = p["gridPos"]
            assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{name}/{p['title']}: {g}"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: panels {cells[(x, y)]} and {p['id']} overlap at {(x, y)}"
                    cells[(x, y)] = p["id"]
            if p["type"] == "row":
                continue
            targets = p.get("targets") or []
            assert targets, f"{name}/{p['title']}: no targets"
            refs = [t.get("refId") for t in targets]
            assert all(refs) and len(refs) == len(set(refs)), f"{name}/{p['title']}: refIds {refs}"
            for t in targets:
                assert isinstance(t.get("expr"), str) and t["expr"].strip(), f"{name}/{p['title']}: empty expr"


def test_datasources_resolve_to_the_provisioned_one():
    uid = _datasource_uid()
    for name, d in _dashboards():
        refs = []
        for p in all_panels(d):
            if p["type"] != "row":
                refs.append((p["title"], p.get("datasource")))
                refs.extend((f"{p['title']}/{t['refId']}", t.get("datasource")) for t in p["targets"])
        for a in d["annotations"]["list"]:
            if a.get("builtIn"):
                assert a["datasource"] == GRAFANA_BUILTIN, f"{name}: built-in annotation {a['datasource']}"
            else:
                refs.append((f"annotation {a['name']}", a.get("datasource")))
        for where, ds in refs:
            assert ds == {"type": "prometheus", "uid": uid}, f"{name}/{where}: datasource {ds} is not {uid}"


def test_dashboard_provider_points_at_the_mounted_dashboards():
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "tellm.yaml").read_text())
    (prov,) = doc["providers"]
    assert prov["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text()) if (ROOT / "docker-compose.yml").exists() \
        else pytest.skip("docker-compose.yml not written yet")
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.split(":")[1] == prov["options"]["path"] and m.split(":")[0].rstrip("/") in ("./dashboards",)
               for m in mounts), f"grafana does not mount ./dashboards at {prov['options']['path']}: {mounts}"


def test_queries_read_documented_metrics_from_their_exporters_job():
    docs = metrics_table()
    documented = {r.name for r in docs}
    job_of = {exp: job for exp, (_, job) in exporter_jobs().items()}
    exporters_of: dict[str, set[str]] = {}
    for r in docs:
        exporters_of.setdefault(r.name, set()).add(job_of[r.exporter])
    queries = dashboard_queries()
    assert len(queries) >= 30
    used = set()
    for q in queries:
        names = metric_names(q.expr, documented)
        assert names, f"{q.id}: reads no tellm_ metric: {q.expr}"
        # A constant fallback (`or vector(0)`) would make a panel show data without its metric, and
        # the live test could not tell.
        assert "vector(" not in q.expr, f"{q.id}: constant series in {q.expr}"
        undocumented = names - documented
        assert not undocumented, f"{q.id}: reads metrics not in docs/metrics.md: {undocumented}"
        js = jobs(q.expr)
        # Every selector names its job: the inference latency histogram name is exported by two jobs.
        assert q.expr.count("tellm_") == q.expr.count('job="'), f"{q.id}: a selector has no job label: {q.expr}"
        for n in names:
            assert js & exporters_of[n], f"{q.id}: {n} is exported by {exporters_of[n]}, query selects {js}"
        used |= names
    unused = documented - used  # every documented metric is on some panel
    assert not unused, f"documented metrics on no dashboard panel: {sorted(unused)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_every_query_is_valid_promql(tmp_path):
    """promtool parses each expression with Prometheus's own parser (as recording rules)."""
    rules = [{"record": f"tellm_check:q{i}", "expr": substitute_grafana_macros(q.expr, "20s", "5s")}
             for i, q in enumerate(dashboard_queries())]
    f = tmp_path / "rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    r = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(rules)} rules found" in r.stdout, r.stdout
