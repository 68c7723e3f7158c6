"""`tellm policy` end to end: the daemon process against a real gRPC PolicyService, and CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ..policy_helpers import FIXTURES, ROOT


from tellm.policy.service import PolicyStore, serve  # noqa: E402


def tellm(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "tellm", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**{k: v for k, v in os.environ.items() if not k.startswith("TELLM_LLM_")},
                                                  "PYTHONPATH": str(ROOT)})


def test_daemon_process_against_policy_serve_process(tmp_path):
    """`tellm policy serve` (persisting) and `tellm policy run` as two processes; `get` from the CLI."""
    from tellm.cli import main

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TELLM_LLM_")}, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "tellm", "policy", "serve", "--listen", "127.0.0.1:0",
                               "--state-file", str(tmp_path / "policies.json")], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        assert "PolicyService listening on port" in line, line
        port = int(line.rsplit(" ", 1)[1])
        r = tellm("policy", "run", "--replay", str(FIXTURES / "controller_states.json"), "--policy-service",
                  f"127.0.0.1:{port}", "--inference", "", "--poll-interval", "0.01", "--decide-every", "1",
                  "--max-polls", "6", "--min-change-interval", "0", "--audit", str(tmp_path / "a.jsonl"))
        assert r.returncode == 0, r.stderr
        steps = [json.loads(x) for x in r.stdout.splitlines()]
        assert len(steps) == 6 and steps[4]["decision"]["action"] == "applied"
        assert main(["policy", "get", "--policy-service", f"127.0.0.1:{port}"]) == 0
    finally:
        server.terminate()
        server.wait(timeout=10)
    # The served store persisted the daemon's change.
    assert PolicyStore(tmp_path / "policies.json").get().policy.name == "latency_aware"


def test_cli_errors_are_one_line(capsys, monkeypatch):
    from tellm.cli import main

    srv, port, store = serve("127.0.0.1:0", PolicyStore())
    try:
        assert main(["policy", "set", "headroom", "--param", "fraction=0.75", "--reason", "x",
                     "--policy-service", f"127.0.0.1:{port}"]) == 2
        assert capsys.readouterr().err.strip() == (
            "tellm policy: error: policy 'headroom': parameter 'fraction' = 0.75 is outside [0, 0.5]")
        assert main(["policy", "set", "headroom", "--param", "fraction=0.3", "--reason", "by hand",
                     "--policy-service", f"127.0.0.1:{port}"]) == 0
        assert store.get().policy.params == {"fraction": 0.3} and store.get().actor == "cli"
    finally:
        srv.stop(grace=None)
    capsys.readouterr()
    assert main(["policy", "get", "--policy-service", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "policy service: UNAVAILABLE" in err and "Traceback" not in err
    for k in ("TELLM_LLM_BASE_URL", "TELLM_LLM_MODEL"):
        monkeypatch.delenv(k, raising=False)
    assert main(["policy", "run", "--engine", "llm", "--replay", str(FIXTURES / "controller_states.json")]) == 2
    assert "TELLM_LLM_BASE_URL" in capsys.readouterr().err
    # --metrics-host: an address this machine does not have (TEST-NET-1) cannot be bound; said in one line.
    assert main(["policy", "run", "--replay", str(FIXTURES / "controller_states.json"), "--max-polls", "1",
                 "--metrics-host", "192.0.2.1", "--metrics-port", "9103"]) == 2
    err = capsys.readouterr().err
    assert "cannot serve metrics on 192.0.2.1:9103" in err and "Traceback" not in err


def test_llm_daemon_process_with_env_config(tmp_path):
    from ..scripted_llm import ScriptedLLM, call, tool_msg

    llm = ScriptedLLM([tool_msg(call("apply_policy", {"policy": "headroom", "params": {"fraction": 0.1},
                                                      "reason": "scripted"})),
                       {"role": "assistant", "content": "done"}])
    srv, port, store = serve("127.0.0.1:0", PolicyStore())
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TELLM_LLM_BASE_URL": llm.url, "TELLM_LLM_MODEL": "m",
               "TELLM_LLM_API_KEY": "k"}
        r = subprocess.run([sys.executable, "-m", "tellm", "policy", "run", "--engine", "llm", "--replay",
                            str(FIXTURES / "controller_states.json"), "--policy-service", f"127.0.0.1:{port}",
                            "--inference", "", "--max-polls", "1", "--poll-interval", "0.01",
                            "--audit", str(tmp_path / "a.jsonl")], capture_output=True, text=True, timeout=60,
                           cwd=ROOT, env=env)
        assert r.returncode == 0, r.stderr
        step = json.loads(r.stdout.splitlines()[0])
        assert step["decision"]["engine"] == "llm:m" and step["decision"]["applied"]
        assert store.get().policy.params == {"fraction": 0.1} and store.get().reason == "scripted"
        assert llm.headers[0]["Authorization"] == "Bearer k"
    finally:
        srv.stop(grace=None)
        llm.close()
