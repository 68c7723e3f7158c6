"""Grafana's provisioning files and every dashboard JSON against Grafana's own schema.

Grafana cannot be pulled everywhere the suite runs, so a provisioning or dashboard error must fail
here. Dashboards: each file is decoded with grafana-foundation-sdk's models, generated from the
dashboard and panel schemas of one Grafana release (the SDK release pyproject.toml pins, the one
dashboards/generate.py builds with; it should be the minor version docker-compose.yml runs), then
encoded again: a key the schema does not define is
dropped on the way, a value the models cannot read fails, so the round trip must give every key and
value back. Panels and queries must be of a type the SDK has a schema for, so no part escapes into
an untyped bag. Provisioning: the file format of Grafana's provisioning documentation (datasources,
dashboard providers), keys and value types.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .. import ROOT
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "dashboards" / "provisioning"

sdk = pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk not installed (dev extra)")

#: Options of Grafana's Prometheus annotation editor. The dashboard schema leaves an annotation query
#: open for datasource-specific options, so the typed model has no field for them.
PROMETHEUS_ANNOTATION_OPTIONS = {"step", "titleFormat", "textFormat", "useValueForTime", "tagKeys",
                                 "seriesValueAsTimestamp"}


def test_sdk_schemas_are_those_of_the_pinned_grafana():
    from importlib.metadata import version

    sdk_minor = re.search(r"!(\d+\.\d+)\.", version("grafana-foundation-sdk"))
    image = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]["image"]
    grafana_minor = re.search(r"grafana-oss:(\d+\.\d+)\.", image)
    assert sdk_minor and grafana_minor, (version("grafana-foundation-sdk"), image)
    assert sdk_minor.group(1) == grafana_minor.group(1), \
        f"grafana-foundation-sdk targets Grafana {sdk_minor.group(1)}, the compose file runs {image}"


def _lost(original, again, path: str) -> list[str]:
    """Keys and values of ``original`` that the round trip did not give back (defaults it adds are fine)."""
    if isinstance(original, dict) and isinstance(again, dict):
        out = []
        for key, value in original.items():
            if key not in again:
                out.append(f"{path}.{key}: not in Grafana's schema")
            else:
                out.extend(_lost(value, again[key], f"{path}.{key}"))
        return out
    if isinstance(original, list) and isinstance(again, list) and len(original) == len(again):
        return [x for i, (a, b) in enumerate(zip(original, again)) for x in _lost(a, b, f"{path}[{i}]")]
    if original != again or type(original) is not type(again):
        return [f"{path}: {original!r} read back as {again!r}"]
    return []


def _round_trip(doc: dict) -> dict:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    return json.loads(json.dumps(Dashboard.from_json(doc), cls=JSONEncoder))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_round_trips_through_grafanas_schema(path):
    doc = json.loads(path.read_text())
    lost = _lost(doc, _round_trip(doc), path.stem)
    for i, a in enumerate(doc.get("annotations", {}).get("list", [])):
        if (a.get("datasource") or {}).get("type") == "prometheus":
            lost = [x for x in lost if not any(x.startswith(f"{path.stem}.annotations.list[{i}].{k}:")
                                               for k in PROMETHEUS_ANNOTATION_OPTIONS)]
    assert not lost, "\n".join(lost)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_and_query_has_a_schema(path):
    from grafana_foundation_sdk.cog import runtime
    from grafana_foundation_sdk.cog.plugins import register_default_plugins

    register_default_plugins()
    doc = json.loads(path.read_text())
    panels = [p for top in doc["panels"] for p in [top, *top.get("panels", [])]]
    for p in panels:
        if p["type"] == "row":
            continue
        assert runtime.panelcfg_config(p["type"]) is not None, f"{p['title']}: no schema for panel type {p['type']}"
        for t in p.get("targets", []):
            ds = (t.get("datasource") or p.get("datasource") or {}).get("type", "")
            assert ds in runtime.Runtime().dataquery_variants, f"{p['title']}: no schema for {ds!r} queries"


# ---------------------------------------------------------------------------------- provisioning
# Grafana's provisioning file format (https://grafana.com/docs/grafana/latest/administration/provisioning/):
# key -> accepted value types.
DATASOURCE_KEYS = {"name": str, "type": str, "access": str, "orgId": int, "uid": str, "url": str, "user": str,
                   "database": str, "basicAuth": bool, "basicAuthUser": str, "withCredentials": bool,
                   "isDefault": bool, "jsonData": dict, "secureJsonData": dict, "version": int, "editable": bool}
PROMETHEUS_JSON_DATA = {"httpMethod": str, "timeInterval": str, "queryTimeout": str, "manageAlerts": bool,
                        "prometheusType": str, "prometheusVersion": str, "cacheLevel": str,
                        "incrementalQuerying": bool, "disableMetricsLookup": bool, "customQueryParameters": str,
                        "exemplarTraceIdDestinations": list, "defaultEditor": str}
PROVIDER_KEYS = {"name": str, "orgId": int, "folder": str, "folderUid": str, "type": str, "disableDeletion": bool,
                 "updateIntervalSeconds": int, "allowUiUpdates": bool, "options": dict}
PROVIDER_OPTIONS = {"path": str, "foldersFromFilesStructure": bool}


def _check_keys(where: str, item: dict, schema: dict[str, type], required: tuple[str, ...]) -> list[str]:
    problems = [f"{where}: {k} missing" for k in required if k not in item]
    for key, value in item.items():
        if key not in schema:
            problems.append(f"{where}: unknown key {key!r}")
        elif not isinstance(value, schema[key]) or (schema[key] is int and isinstance(value, bool)):
            problems.append(f"{where}: {key} is {type(value).__name__}, Grafana wants {schema[key].__name__}")
    return problems


def _provisioning(kind: str) -> list[tuple[str, dict]]:
    files = sorted((PROVISIONING / kind).glob("*.y*ml"))
    assert files, f"no {kind} provisioning files"
    return [(f.name, yaml.safe_load(f.read_text())) for f in files]


def test_datasource_provisioning_matches_grafanas_format():
    from grafana_foundation_sdk.cog import runtime
    from grafana_foundation_sdk.cog.plugins import register_default_plugins

    register_default_plugins()
    problems = []
    for name, doc in _provisioning("datasources"):
        problems += _check_keys(name, doc, {"apiVersion": int, "datasources": list, "deleteDatasources": list},
                                ("apiVersion",))
        assert doc["apiVersion"] == 1, f"{name}: apiVersion {doc['apiVersion']}"
        defaults = [d for d in doc["datasources"] if d.get("isDefault")]
        assert len(defaults) <= 1, f"{name}: {len(defaults)} default datasources"
        for ds in doc["datasources"]:
            where = f"{name}/{ds.get('name')}"
            problems += _check_keys(where, ds, DATASOURCE_KEYS, ("name", "type", "access", "url"))
            if ds.get("access") not in ("proxy", "direct"):
                problems.append(f"{where}: access {ds.get('access')!r} (proxy or direct)")
            if not 0 < len(str(ds.get("uid", "x"))) <= 40:
                problems.append(f"{where}: uid longer than Grafana's 40 characters")
            if ds.get("type") not in runtime.Runtime().dataquery_variants:
                problems.append(f"{where}: no Grafana schema for datasource type {ds.get('type')!r}")
            if ds.get("type") == "prometheus":
                problems += _check_keys(f"{where}/jsonData", ds.get("jsonData") or {}, PROMETHEUS_JSON_DATA, ())
    assert not problems, "\n".join(problems)


def test_dashboard_provisioning_matches_grafanas_format():
    problems = []
    for name, doc in _provisioning("dashboards"):
        problems += _check_keys(name, doc, {"apiVersion": int, "providers": list}, ("apiVersion", "providers"))
        assert doc["apiVersion"] == 1, f"{name}: apiVersion {doc['apiVersion']}"
        for prov in doc["providers"]:
            where = f"{name}/{prov.get('name')}"
            problems += _check_keys(where, prov, PROVIDER_KEYS, ("name", "type", "options"))
            if prov.get("type") != "file":
                problems.append(f"{where}: type {prov.get('type')!r} (Grafana provisions dashboards from 'file')")
            problems += _check_keys(f"{where}/options", prov.get("options") or {}, PROVIDER_OPTIONS, ("path",))
            if not str((prov.get("options") or {}).get("path", "")).startswith("/"):
                problems.append(f"{where}: options.path must be an absolute path in the Grafana container")
    assert not problems, "\n".join(problems)


def test_a_broken_dashboard_fails_the_round_trip():
    """The check catches what Grafana would drop: a misspelt panel key and an unknown option."""
    doc = json.loads(DASHBOARDS[0].read_text())
    panel = next(p for p in doc["panels"] if p["type"] != "row")
    panel["gridpos"] = panel.pop("gridPos")
    panel.setdefault("options", {})["legendd"] = {"show": True}
    lost = _lost(doc, _round_trip(doc), "d")
    assert any(x.endswith(".gridpos: not in Grafana's schema") for x in lost), lost
    assert any(x.endswith(".legendd: not in Grafana's schema") for x in lost), lost
