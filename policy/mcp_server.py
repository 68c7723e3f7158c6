"""MCP server (official ``mcp`` SDK, stdio) exposing the policy tools to agent clients.

Same six tools as the LLM engine, same validation, guardrails and audit (engine name "mcp").
Start with ``tellm policy mcp ...`` (see ``--help``); an MCP client launches it as a subprocess.
"""

from __future__ import annotations

from typing import Any

from .tools import TOOL_SCHEMAS, PolicyTools, ToolError


def _sdk():
    """(server class, the SDK's ToolError): MCPServer in mcp >= 2, FastMCP in mcp 1.x."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError as SDKToolError

        return MCPServer, SDKToolError
    except ImportError:
        from mcp.server.fastmcp import FastMCP
        from mcp.server.fastmcp.exceptions import ToolError as SDKToolError

        return FastMCP, SDKToolError


def build_server(tools: PolicyTools, engine: str = "mcp"):
    server_cls, sdk_tool_error = _sdk()
    server = server_cls(name="tellm-policy", instructions=(
        "Choose tellm's traffic-engineering objective. Inspect state, evaluate candidates, then apply one "
        "policy with a reason. Guardrails (bounds, rate limit, automatic rollback) apply."))
    desc = {t["name"]: t["description"] for t in TOOL_SCHEMAS}

    def run(name: str, args: dict[str, Any]) -> dict:
        try:
            return tools.call(name, {k: v for k, v in args.items() if v is not None}, engine=engine,
                              context=str(args.get("reason", "")))
        except ToolError as exc:
            # The SDK's ToolError becomes an error result carrying this message (other exceptions
            # are reported as crashes without their text).
            raise sdk_tool_error(str(exc)) from None

    @server.tool(name="get_network_state", description=desc["get_network_state"])
    def get_network_state() -> dict:
        return run("get_network_state", {})

    @server.tool(name="get_mlu_history", description=desc["get_mlu_history"])
    def get_mlu_history(last: int = 60) -> dict:
        return run("get_mlu_history", {"last": last})

    @server.tool(name="list_policies", description=desc["list_policies"])
    def list_policies() -> dict:
        return run("list_policies", {})

    @server.tool(name="evaluate_policy", description=desc["evaluate_policy"])
    def evaluate_policy(policy: str, params: dict[str, float] | None = None) -> dict:
        return run("evaluate_policy", {"policy": policy, "params": params})

    @server.tool(name="apply_policy", description=desc["apply_policy"])
    def apply_policy(policy: str, reason: str, params: dict[str, float] | None = None) -> dict:
        return run("apply_policy", {"policy": policy, "params": params, "reason": reason})

    @server.tool(name="rollback", description=desc["rollback"])
    def rollback(reason: str) -> dict:
        return run("rollback", {"reason": reason})

    return server
