"""`tellm demo` as a user runs it (a real subprocess, real everything): it completes with both phases
and writes its summary and plot; Ctrl-C mid-run cleans up the network and every process it started."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tellm.mininet_scenarios.net import mininet_unavailable

from .. import ROOT

pytestmark = [pytest.mark.mininet, pytest.mark.slow]



@pytest.fixture(autouse=True)
def _needs_root():
    reason = mininet_unavailable()
    if reason:
        pytest.skip(reason)
    if not (ROOT / "inference" / "models" / "tellm-te.onnx").exists():
        pytest.skip("the shipped model inference/models/tellm-te.onnx is absent")


def _bridges() -> set[str]:
    out = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True).stdout
    return set(out.split())


def _our_processes(marker: str) -> list[int]:
    """Processes started by the demo run writing under ``marker``: the demo exports TELLM_DEMO_RUN
    (its run folder) and every child inherits it (services, Mininet hosts, traffic)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = (d / "environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"TELLM_DEMO_RUN={marker}" in env:
                pids.append(int(d.name))
    return pids


def test_demo_runs_both_phases_and_writes_summary_and_plot(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "tellm.cli", "demo", "--scenario", "diamond", "--duration", "14",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "MLU shortest path" in r.stdout and "MLU tellm" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    sp, te = summary["phases"]["ecmp"], summary["phases"]["model"]
    assert len(sp["samples"]) >= 13 and len(te["samples"]) >= 13
    assert te["steady_mlu"] < sp["steady_mlu"]
    assert (out / "mlu.png").stat().st_size > 10_000
    assert not {f"s{i}" for i in range(1, 6)} & _bridges()
    assert not _our_processes(str(out))


def test_demo_ctrl_c_cleans_up(tmp_path):
    out = tmp_path / "demo-int"
    p = subprocess.Popen([sys.executable, "-m", "tellm.cli", "demo", "--scenario", "diamond", "--duration", "60",
                          "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen += line
            if "traffic running" in line:
                break
        assert "traffic running" in seen, seen[-3000:]
        time.sleep(3)
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, (seen + rest)[-3000:]
    assert "interrupted" in rest
    assert not {f"s{i}" for i in range(1, 6)} & _bridges()
    time.sleep(1)
    assert not _our_processes(str(out)), "processes of the demo survived Ctrl-C"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "h1x1-eth0" not in links and "s1-eth1" not in links
