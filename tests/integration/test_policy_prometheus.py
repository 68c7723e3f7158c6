"""PrometheusStateSource against a real Prometheus server scraping a real metrics endpoint that
exports the controller's metric names (tellm_mlu_ratio, tellm_link_utilization_ratio)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tellm.policy.state import PrometheusStateSource, StateError

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus binary not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_state_from_real_prometheus(tmp_path):
    reg = CollectorRegistry()
    mlu = Gauge("tellm_mlu_ratio", "MLU", registry=reg)
    util = Gauge("tellm_link_utilization_ratio", "util", ["link"], registry=reg)
    mlu.set(0.63)
    util.labels(link="s1->s2").set(0.63)
    util.labels(link="s2->s1").set(0.2)
    exporter, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    target = f"127.0.0.1:{exporter.server_port}"
    prom_port = _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: controller\n    static_configs: [{{targets: ['{target}']}}]\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        src = PrometheusStateSource(f"http://127.0.0.1:{prom_port}", timeout_seconds=1.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                st = src.read()
                if len(st.link_utilization) == 2:
                    break
            except StateError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("Prometheus did not scrape the exporter within 30 s")
            time.sleep(0.3)
        assert st.mlu == pytest.approx(0.63)
        assert st.link_utilization == {"s1->s2": pytest.approx(0.63), "s2->s1": pytest.approx(0.2)}
        assert st.traffic_matrix_bps is None
        hist = src.mlu_history(window_seconds=30, step_seconds=1)
        assert hist and hist[-1][1] == pytest.approx(0.63)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        exporter.shutdown()
    with pytest.raises(StateError, match="cannot read"):
        PrometheusStateSource(f"http://127.0.0.1:{prom_port}", timeout_seconds=0.5).read()
