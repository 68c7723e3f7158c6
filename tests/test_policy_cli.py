"""`tellm policy` end to end: the daemon process against a real gRPC PolicyService, and CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .policy_helpers import FIXTURES, ROOT, ensure_policy_stubs

ensure_policy_stubs()

from tellm.policy.service import PolicyStore, serve  # noqa: E402


def tellm(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "tellm", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**{k: v for k, v in os.environ.items() if not k.startswith("TELLM_LLM_")},
                                                  "PYTHONPATH": str(ROOT)})


def test_daemon_process_applies_and_cli_reads_back(tmp_path):
    srv, port, store = serve("127.0.0.1:0", PolicyStore())
    try:
        r = tellm("policy", "run", "--replay", str(FIXTURES / "controller_states.json"), "--policy-service",
                  f"127.0.0.1:{port}", "--inference", "", "--poll-interval", "0.01", "--decide-every", "1",
                  "--max-polls", "6", "--min-change-interval", "0", "--audit", str(tmp_path / "a.jsonl"))
        assert r.returncode == 0, r.stderr
        steps = [json.loads(x) for x in r.stdout.splitlines()]
        assert len(steps) == 6 and steps[4]["decision"]["action"] == "applied"
        assert store.get().policy.name == "latency_aware"
        got = tellm("policy", "get", "--policy-service", f"127.0.0.1:{port}")
        assert json.loads(got.stdout)["policy"]["name"] == "latency_aware"
        bad = tellm("policy", "set", "headroom", "--param", "fraction=0.75", "--reason", "x",
                    "--policy-service", f"127.0.0.1:{port}")
        assert bad.returncode == 2 and bad.stderr.strip() == (
            "tellm policy: error: policy 'headroom': parameter 'fraction' = 0.75 is outside [0, 0.5]")
        ok = tellm("policy", "set", "headroom", "--param", "fraction=0.3", "--reason", "by hand",
                   "--policy-service", f"127.0.0.1:{port}")
        assert ok.returncode == 0 and store.get().policy.params == {"fraction": 0.3}
    finally:
        srv.stop(grace=None)
    down = tellm("policy", "get", "--policy-service", "127.0.0.1:1")
    assert down.returncode == 2 and "policy service: UNAVAILABLE" in down.stderr and "Traceback" not in down.stderr
    llm = tellm("policy", "run", "--engine", "llm", "--replay", str(FIXTURES / "controller_states.json"))
    assert llm.returncode == 2 and "TELLM_LLM_BASE_URL" in llm.stderr


def test_llm_daemon_process_with_env_config(tmp_path):
    from .test_policy_llm import ScriptedLLM, call, tool_msg

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
