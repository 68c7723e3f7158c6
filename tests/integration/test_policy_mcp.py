"""The MCP server (`tellm policy mcp`, stdio) through the official SDK's client, against a real
gRPC PolicyService."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from ..policy_helpers import FIXTURES, ROOT

mcp = pytest.importorskip("mcp", reason="the llm extra (mcp) is not installed")

from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

from tellm.policy.guard import AuditLog  # noqa: E402
from tellm.policy.service import PolicyStore, serve  # noqa: E402
from tellm.policy.tools import TOOL_NAMES  # noqa: E402


def _is_error(result) -> bool:  # mcp 2.x: is_error; 1.x: isError
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))


def _payload(result) -> dict:
    assert not _is_error(result), _text(result)
    return json.loads(result.content[0].text)


def _text(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def _session_run(port: int, audit: str, replay: str):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "tellm", "policy", "mcp", "--replay", replay,
              "--policy-service", f"127.0.0.1:{port}", "--inference", "", "--audit", audit,
              "--min-change-interval", "0", "--poll-interval", "0.2"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
    out = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
            out["state"] = _payload(await session.call_tool("get_network_state", {}))
            out["policies"] = _payload(await session.call_tool("list_policies", {}))
            out["eval"] = _payload(await session.call_tool("evaluate_policy", {"policy": "latency_aware",
                                                                               "params": {"weight": 0.5}}))
            out["bad"] = await session.call_tool("apply_policy", {"policy": "headroom", "params": {"fraction": 0.8},
                                                                  "reason": "too much"})
            out["apply"] = _payload(await session.call_tool("apply_policy", {
                "policy": "latency_aware", "params": {"weight": 0.5}, "reason": "light load, shorter paths"}))
            out["rollback"] = _payload(await session.call_tool("rollback", {"reason": "changed my mind"}))
            await asyncio.sleep(0.5)  # the background observer keeps polling meanwhile
            out["history"] = _payload(await session.call_tool("get_mlu_history", {"last": 3}))
    return out


def test_mcp_server_over_stdio(tmp_path):
    srv, port, store = serve("127.0.0.1:0", PolicyStore())
    replay = tmp_path / "calm.json"  # a steady calm network: no automatic rollback interferes
    replay.write_text(json.dumps(json.loads((FIXTURES / "controller_states.json").read_text())[:3]))
    try:
        out = asyncio.run(asyncio.wait_for(_session_run(port, str(tmp_path / "audit.jsonl"), str(replay)), timeout=60))
    finally:
        srv.stop(grace=None)
    assert out["tools"] == sorted(TOOL_NAMES)
    assert out["state"]["mlu"] == pytest.approx(0.3, abs=0.05) and out["state"]["active_policy"]["policy"]["name"] == "min_mlu"
    assert {p["name"] for p in out["policies"]["policies"]} >= {"min_mlu", "headroom", "latency_aware"}
    assert out["eval"]["evaluated_with"].startswith("tecore per-policy LP") and out["eval"]["latency_stretch"] >= 1
    assert _is_error(out["bad"]) and "'fraction' = 0.8 is outside [0, 0.5]" in _text(out["bad"])
    assert out["apply"]["outcome"] == "applied" and out["rollback"]["outcome"] == "rolled_back"
    assert out["history"]["stats"]["count"] == 3  # polled in the background, last 3 samples
    # Through gRPC: applied then rolled back (two versions), and the audit says who and why.
    assert store.get().version == 2 and store.get().policy.name == "min_mlu"
    audit = AuditLog(tmp_path / "audit.jsonl").read()
    acts = [(a["tool"], a["outcome"].split(":")[0]) for a in audit if a["tool"] in ("apply_policy", "rollback")]
    assert acts == [("apply_policy", "rejected"), ("apply_policy", "applied"), ("rollback", "applied")]
    assert all(a["engine"] == "mcp" for a in audit if a["tool"] != "confirm")
