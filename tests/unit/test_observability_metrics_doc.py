"""docs/metrics.md documents every metric, and the code registers exactly what it documents."""

from __future__ import annotations

import re

import pytest

from .._observability import EXPORTER_MODULES, ModuleMissing, exporter_jobs, metrics_table, registered_metrics

TYPES = {"counter", "gauge", "histogram"}
#: Unit column -> the suffix Prometheus conventions ask for.
UNIT_SUFFIX = {"seconds": "_seconds", "bits/s": "_bits_per_second", "ratio": "_ratio", "info": "_info"}


def test_table_is_well_formed():
    rows = metrics_table()
    assert len(rows) >= 10
    jobs = exporter_jobs()
    assert set(jobs) == set(EXPORTER_MODULES), "exporter table and EXPORTER_MODULES disagree"
    seen = set()
    for r in rows:
        assert re.fullmatch(r"tellm_[a-z0-9_]+", r.name), r.name
        assert r.type in TYPES, f"{r.name}: type {r.type!r} not in {sorted(TYPES)}"
        assert r.exporter in jobs, f"{r.name}: unknown exporter {r.exporter!r}"
        assert r.meaning and r.unit, f"{r.name}: unit and meaning must be filled in"
        assert (r.name, r.exporter) not in seen, f"{r.name} listed twice for {r.exporter}"
        seen.add((r.name, r.exporter))


def test_names_follow_prometheus_conventions():
    for r in metrics_table():
        assert (r.type == "counter") == r.name.endswith("_total"), f"{r.name}: counters and only counters end in _total"
        suffix = UNIT_SUFFIX.get(r.unit)
        if suffix:
            assert r.name.endswith(suffix), f"{r.name}: unit {r.unit} wants the suffix {suffix}"
        if r.name.endswith("_info"):
            assert r.type == "gauge" and r.labels, f"{r.name}: info metrics are labelled gauges"
        assert "le" not in r.labels and "job" not in r.labels and "instance" not in r.labels, \
            f"{r.name}: le/job/instance are reserved for Prometheus"


def test_shared_names_have_the_same_type():
    """A name exported by two processes (the inference latency histogram) must mean the same kind of thing."""
    by_name: dict[str, set[str]] = {}
    for r in metrics_table():
        by_name.setdefault(r.name, set()).add(r.type)
    assert all(len(t) == 1 for t in by_name.values()), by_name


@pytest.mark.parametrize("exporter", sorted(EXPORTER_MODULES))
def test_table_matches_registered_metrics(exporter):
    module, part = EXPORTER_MODULES[exporter]
    try:
        registered = registered_metrics(module)
    except ModuleMissing as exc:
        pytest.skip(f"{exc}: the {exporter} metrics ({part}) are not importable, so the table rows for "
                    f"'{exporter}' cannot be checked against code")
    assert registered, f"{module} defines no prometheus_client metric that this test can find"
    documented = {r.name: (r.type, r.labels) for r in metrics_table() if r.exporter == exporter}
    undocumented = sorted(set(registered) - set(documented))
    missing = sorted(set(documented) - set(registered))
    assert not undocumented, f"{module} registers metrics that docs/metrics.md does not document: {undocumented}"
    assert not missing, f"docs/metrics.md documents {exporter} metrics that {module} does not register: {missing}"
    differ = {n: {"code": registered[n], "doc": documented[n]} for n in registered if registered[n] != documented[n]}
    assert not differ, f"type or labels differ between {module} and docs/metrics.md: {differ}"
