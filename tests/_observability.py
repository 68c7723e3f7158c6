"""Helpers shared by the observability tests: the metrics table of docs/metrics.md, the queries of the
Grafana dashboards, and the metrics the code registers."""

from __future__ import annotations

import importlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import ROOT

METRICS_DOC = ROOT / "docs" / "metrics.md"
DASHBOARD_DIR = ROOT / "dashboards"

#: Where each exporter's metrics live in the code, and the part of tellm it is (for skip reasons).
EXPORTER_MODULES = {
    "controller": ("tellm.controller.metrics", "the controller"),
    "inference": ("tellm.inference.metrics", "the inference service"),
    "policy": ("tellm.policy.guard", "the policy daemon"),
}

_NAME_RE = re.compile(r"\btellm_[a-z0-9_]+")
_JOB_RE = re.compile(r'\bjob\s*=\s*"([^"]+)"')


@dataclass(frozen=True)
class MetricDoc:
    name: str  # as written in PromQL (counters with _total)
    type: str  # counter, gauge, histogram
    labels: tuple[str, ...]
    unit: str
    exporter: str
    meaning: str


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_rows(lines: list[str]) -> list[list[str]]:
    """Rows of a markdown table (header and separator dropped)."""
    rows = [_cells(ln) for ln in lines if ln.strip().startswith("|")]
    return [r for r in rows[2:]] if len(rows) >= 2 else []


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def metrics_table(path: Path = METRICS_DOC) -> list[MetricDoc]:
    text = path.read_text()
    m = re.search(r"<!-- metrics-table:start -->(.*?)<!-- metrics-table:end -->", text, re.S)
    if m is None:
        raise AssertionError(f"{path}: no <!-- metrics-table:start --> ... end --> block")
    out = []
    for row in _table_rows(m.group(1).splitlines()):
        if len(row) != 6:
            raise AssertionError(f"{path}: metrics table row has {len(row)} cells, expected 6: {row}")
        names = _code(row[0])
        if len(names) != 1:
            raise AssertionError(f"{path}: metric cell must hold one `name`: {row[0]!r}")
        out.append(MetricDoc(names[0], row[1], tuple(sorted(_code(row[2]))), row[3], row[4], row[5]))
    return out


def exporter_jobs(path: Path = METRICS_DOC) -> dict[str, tuple[int, str]]:
    """exporter -> (metrics port, Prometheus job), from the exporter table of docs/metrics.md."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| Exporter"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    out = {}
    for row in _table_rows(lines[start:end]):
        out[row[0]] = (int(row[2]), _code(row[3])[0])
    return out


# ------------------------------------------------------------------------------------ dashboards
def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def all_panels(dash: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []) if p.get("type") == "row" else [])
    return out


@dataclass(frozen=True)
class Query:
    dashboard: str  # file stem
    where: str  # panel title + refId, or annotation name
    expr: str
    instant: bool
    annotation: bool

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.where}"


def dashboard_queries() -> list[Query]:
    out = []
    for f in dashboard_files():
        d = json.loads(f.read_text())
        for p in all_panels(d):
            for t in p.get("targets", []):
                out.append(Query(f.stem, f"{p.get('title')}/{t.get('refId')}", t.get("expr", ""),
                                 bool(t.get("instant")), False))
        for a in d.get("annotations", {}).get("list", []):
            if not a.get("builtIn"):
                out.append(Query(f.stem, f"annotation {a.get('name')}", a.get("expr", ""), False, True))
    return out


def metric_names(expr: str, documented: set[str]) -> set[str]:
    """Documented metric names an expression reads (histogram series map to the histogram's name)."""
    out = set()
    for n in _NAME_RE.findall(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        out.add(n if n in documented or base not in documented else base)
    return out


def jobs(expr: str) -> set[str]:
    return set(_JOB_RE.findall(expr))


def substitute_grafana_macros(expr: str, rate_interval: str, interval: str) -> str:
    """What Grafana does before sending a query: replace its interval macros by durations."""
    return expr.replace("$__rate_interval", rate_interval).replace("$__interval", interval)


# ------------------------------------------------------------------------------------ the code
class ModuleMissing(Exception):
    pass


def registered_metrics(module_name: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name (as in PromQL) -> (type, sorted labels) of every metric the module registers.

    Found the way the services create them: module-level registries and metrics, and the registries
    of the metrics classes the module defines (instantiated with no arguments, as the services do)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import MetricWrapperBase

    try:
        mod = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ModuleMissing(f"{module_name} is not installed") from None
        raise
    collectors: list = []
    registries: list = []
    for obj in vars(mod).values():
        if isinstance(obj, CollectorRegistry):
            registries.append(obj)
        elif isinstance(obj, MetricWrapperBase):
            collectors.append(obj)
        elif inspect.isclass(obj) and obj.__module__ == mod.__name__:
            try:
                inst = obj()
            except TypeError:
                continue  # needs arguments: not a metrics holder
            registries.extend(v for v in vars(inst).values() if isinstance(v, CollectorRegistry))
    for r in registries:
        # prometheus_client has no public "list collectors"; _collector_to_names has been stable for years.
        collectors.extend(c for c in r._collector_to_names if isinstance(c, MetricWrapperBase))
    out = {}
    for c in collectors:
        name = c._name + ("_total" if c._type == "counter" else "")
        out[name] = (c._type, tuple(sorted(c._labelnames)))
    return out
