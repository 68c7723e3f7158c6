"""The LLM engine against a scripted OpenAI-compatible chat-completions server on loopback:
real HTTP, real tool-call JSON. Bad tool calls get a clear error back and apply nothing."""

from __future__ import annotations

import json
import time

import pytest

from ..policy_helpers import FakeClock, recorded_states
from ..scripted_llm import ScriptedLLM, call, tool_msg


from tellm.policy.guard import Actuator, AuditLog, GuardConfig  # noqa: E402
from tellm.policy.llm import LLMConfig, LLMEngine, LLMError  # noqa: E402
from tellm.contract.policy_client import PolicyClient  # noqa: E402
from tellm.policy.service import PolicyStore, serve  # noqa: E402
from tellm.policy.state import MluHistory, RecordedStateSource  # noqa: E402
from tellm.policy.tools import TOOL_NAMES, PolicyTools, WhatIf  # noqa: E402


@pytest.fixture
def env(tmp_path):
    srv, port, store = serve("127.0.0.1:0", PolicyStore())
    client = PolicyClient(f"127.0.0.1:{port}")
    act = Actuator(client, GuardConfig(min_change_interval_seconds=0), AuditLog(tmp_path / "audit.jsonl"),
                   clock=FakeClock())
    tools = PolicyTools(act, RecordedStateSource(recorded_states()[5:]), MluHistory(), WhatIf(inference_address=None))
    for _ in range(5):
        tools.refresh()
    llms = []

    def engine(steps, timeout=5.0):
        llm = ScriptedLLM(steps)
        llms.append(llm)
        return llm, LLMEngine(LLMConfig(base_url=llm.url, model="scripted-7b", api_key="sk-test",
                                        timeout_seconds=timeout))

    yield tools, store, engine, tmp_path / "audit.jsonl"
    for llm in llms:
        llm.close()
    client.close()
    srv.stop(grace=None)


def test_llm_applies_a_policy_through_tools(env):
    tools, store, engine, audit = env
    llm, eng = engine([
        tool_msg(call("get_mlu_history", {"last": 5}, "a"), call("list_policies", {}, "b")),
        tool_msg(call("evaluate_policy", {"policy": "headroom", "params": {"fraction": 0.25}}, "c")),
        tool_msg(call("apply_policy", {"policy": "headroom", "params": {"fraction": 0.25},
                                       "reason": "MLU swings 0.25-0.75: keep 25% free for bursts"}, "d"),
                 content="Bursty traffic."),
        {"role": "assistant", "content": "Switched to headroom 0.25."},
    ])
    out = eng.decide(tools)
    assert out["applied"] and out["final_message"] == "Switched to headroom 0.25."
    got = store.get()
    assert got.policy.name == "headroom" and got.policy.params["fraction"] == pytest.approx(0.25)
    assert got.reason == "MLU swings 0.25-0.75: keep 25% free for bursts" and got.actor == "tellm-policy/llm:scripted-7b"
    # What the endpoint saw: the six tools, bearer key, and our tool results fed back.
    first = llm.requests[0]
    assert [t["function"]["name"] for t in first["tools"]] == list(TOOL_NAMES) and first["model"] == "scripted-7b"
    assert llm.headers[0]["Authorization"] == "Bearer sk-test"
    tool_results = {m["tool_call_id"]: json.loads(m["content"]) for m in llm.requests[3]["messages"] if m["role"] == "tool"}
    assert tool_results["a"]["stats"]["count"] == 5
    assert tool_results["c"]["evaluated_with"].startswith("tecore per-policy LP")
    assert tool_results["d"]["outcome"] == "applied"
    lines = AuditLog(audit).read()
    assert [(x["tool"], x["outcome"]) for x in lines if x["tool"] == "apply_policy"] == [("apply_policy", "applied")]
    assert {x["engine"] for x in lines} == {"llm:scripted-7b"}


@pytest.mark.parametrize("bad,error", [
    (call("apply_policy", None, raw_args='{"policy": "headroom", "reason": '), "arguments are not valid JSON"),
    (call("shutdown_network", {"reason": "x"}), "unknown tool 'shutdown_network'"),
    (call("apply_policy", {"policy": "headroom", "params": {"fraction": 0.9}, "reason": "max headroom"}),
     "'fraction' = 0.9 is outside [0, 0.5]"),
    (call("apply_policy", {"policy": "latency_aware", "params": {"weight": -1}, "reason": "x"}), "outside [0, 1]"),
    (call("apply_policy", {"policy": "headroom", "params": {"fraction": 0.2}}), "missing required argument 'reason'"),
    (call("apply_policy", {"policy": "headroom", "reason": "x", "force": True}), "unexpected argument 'force'"),
    (call("apply_policy", {"policy": "headroom", "params": [0.2], "reason": "x"}), "'params' must be an object"),
    (call("apply_policy", {"policy": "turbo", "reason": "x"}), "unknown policy 'turbo'"),
    ({"id": "z", "type": "function"}, "malformed tool call"),
    (call("apply_policy", None, raw_args='["headroom"]'), "arguments must be a JSON object"),
])
def test_bad_tool_calls_are_rejected_and_nothing_applied(env, bad, error):
    tools, store, engine, audit = env
    llm, eng = engine([tool_msg(bad), {"role": "assistant", "content": "ok, keeping the policy"}])
    out = eng.decide(tools)
    assert not out["applied"] and out["action"] == "none"
    assert error in out["tool_calls"][0]["error"]
    # The model was told, in the tool result of its call.
    tool_msgs = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert error in json.loads(tool_msgs[0]["content"])["error"]
    assert store.get().version == 0 and store.get().policy.name == "min_mlu"
    assert any(x["outcome"].startswith("rejected") and error in x["outcome"] for x in AuditLog(audit).read())


def test_timeout_http_error_and_garbage_apply_nothing(env):
    tools, store, engine, audit = env
    _, eng = engine([("sleep", 1.5)], timeout=0.3)
    t0 = time.monotonic()
    out = eng.decide(tools)
    assert out["action"] == "error" and "timed out after 0.3 s" in out["error"] and time.monotonic() - t0 < 1.4
    _, eng = engine([("raw", 500, "overloaded")])
    assert "HTTP 500: overloaded" in eng.decide(tools)["error"]
    _, eng = engine([("raw", 200, '{"choices": []}')])
    assert "not a chat completion" in eng.decide(tools)["error"]
    # Timeout after a tool call proposal: the proposal never ran because the call's result was never read back.
    _, eng = engine([tool_msg(call("get_network_state", {})), ("sleep", 1.5)], timeout=0.3)
    out = eng.decide(tools)
    assert out["action"] == "error" and not out["applied"]
    assert store.get().version == 0
    assert sum(1 for x in AuditLog(audit).read() if x["tool"] == "llm" and x["outcome"].startswith("error")) == 4


def test_rate_limited_apply_is_reported_to_the_model(env):
    tools, store, engine, audit = env
    tools.actuator.config = GuardConfig(min_change_interval_seconds=600)
    tools.call("apply_policy", {"policy": "headroom", "reason": "first"}, engine="test")
    llm, eng = engine([tool_msg(call("apply_policy", {"policy": "latency_aware", "reason": "second"})),
                       {"role": "assistant", "content": "fine"}])
    out = eng.decide(tools)
    assert not out["applied"] and "rate limit" in out["tool_calls"][0]["error"]
    assert store.get().policy.name == "headroom"


def test_config_from_env():
    with pytest.raises(LLMError, match="TELLM_LLM_BASE_URL"):
        LLMConfig.from_env({})
    cfg = LLMConfig.from_env({"TELLM_LLM_BASE_URL": "http://h:1/v1/", "TELLM_LLM_MODEL": "qwen2.5-7b"})
    assert cfg.base_url == "http://h:1/v1" and cfg.api_key == ""
