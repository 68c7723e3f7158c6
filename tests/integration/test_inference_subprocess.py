"""`tellm serve` as a real subprocess: start, serve, SIGTERM/SIGINT shutdown, restart on the same
port (the client reconnects and re-registers), and operator errors without tracebacks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
from ..inference_support import check_reply_contract, demands, model_under_test, paths_for, ring_topology

from tellm.contract.client import InferenceClient, StaleTopology

# Not "python -m tellm.cli": that runs cli.py as __main__, whose CLIError is another class than the one
# the subcommands raise (so operator errors would print tracebacks). The console script does this.
TELLM = [sys.executable, "-c", "import sys; from tellm.cli import main; sys.exit(main())"]
LISTEN = re.compile(r"listening on (\S+):(\d+) metrics_port=(\d+|off) provider=(\S+) model_version=(\S+)")


def start_serve(model, port: int = 0, *extra: str) -> tuple[subprocess.Popen, re.Match]:
    cmd = [*TELLM, "serve", "--model", str(model), "--port", str(port),
           "--metrics-port", "0", "--grace", "2", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()  # the server prints one line once it is serving
    match = LISTEN.search(line)
    if match is None:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"tellm serve did not start: {line!r} {out!r} {err!r}")
    return proc, match


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_subprocess_restart_and_graceful_shutdown(tmp_path, sig):
    model, _ = model_under_test(tmp_path)
    topo = ring_topology(7, chords=3, seed=1)
    paths = paths_for(topo, k=3)
    d = demands(paths)
    proc, m = start_serve(model)
    port = int(m.group(2))
    assert m.group(4) == "CPUExecutionProvider"
    client = InferenceClient(f"127.0.0.1:{port}", timeout_seconds=5.0, retries=6, backoff_seconds=0.1)
    try:
        handle = client.register_topology(topo, paths)
        reply = client.route(handle, d)
        check_reply_contract(topo, paths, d, None, reply)
        assert reply.model_version == m.group(5)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{m.group(3)}/metrics", timeout=5).read().decode()
        assert 'tellm_inference_requests_total{code="OK",method="Route"} 1.0' in metrics
        assert 'tellm_inference_provider_info{provider="CPUExecutionProvider"} 1.0' in metrics

        code, err = stop(proc, sig)
        assert code == 0, err
        assert "Traceback" not in err and "shutting down" in err
        assert not client.health()

        # Restart on the same port: the same client object reconnects; the new process has no
        # topologies, which the client reports as StaleTopology; registering again fixes it.
        proc, m = start_serve(model, port)
        assert int(m.group(2)) == port
        with pytest.raises(StaleTopology) as stale:
            client.route(handle, d)
        assert stale.value.code == grpc.StatusCode.FAILED_PRECONDITION
        handle = client.register_topology(topo, paths)
        check_reply_contract(topo, paths, d, None, client.route(handle, d))
        assert client.health()
    finally:
        client.close()
        if proc.poll() is None:
            code, err = stop(proc)
            assert code == 0, err


def test_serve_operator_errors(tmp_path):
    missing = subprocess.run([*TELLM, "serve", "--model", str(tmp_path / "nope.onnx")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model")
    bad = subprocess.run([*TELLM, "serve", "--model", str(garbage), "--port", "0",
                          "--metrics-port", "-1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a loadable ONNX model" in bad.stderr and "Traceback" not in bad.stderr
    helptext = subprocess.run([*TELLM, "serve", "--help"], capture_output=True, text=True,
                              timeout=60)
    assert helptext.returncode == 0 and "--metrics-port" in helptext.stdout
