"""The LLM decision engine: any OpenAI-compatible chat-completions endpoint with tool calling.

Works with vLLM, Ollama, llama.cpp server and hosted APIs. Configured from the environment:
TELLM_LLM_BASE_URL (e.g. http://127.0.0.1:8000/v1), TELLM_LLM_MODEL, TELLM_LLM_API_KEY (optional).
The model only acts through the six tools (tellm.policy.tools); every tool call is validated and
audited, a bad one gets an error message back as the tool result (so the model can correct itself)
and applies nothing. Transport failures (timeout, HTTP error, a reply that is not a chat
completion) end the decision with ``LLMError``: nothing more is applied.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import httpx

from .tools import TOOL_SCHEMAS, PolicyTools, ToolError

log = logging.getLogger(__name__)

SYSTEM_PROMPT = """You are the traffic-engineering policy agent of tellm, an SDN controller whose \
learned TE model routes traffic over candidate paths. You choose the TE objective (policy); you never \
route traffic yourself. Policies: min_mlu (balance load), headroom (keep a fraction of every link free \
for bursts), latency_aware (trade some load balance for shorter paths). Work only through the tools: \
look at the network state and MLU history, evaluate candidate policies (what-if) before applying one, \
and apply at most one policy per decision, with a short concrete reason. Keep the active policy when \
there is no clear benefit. Guardrails may refuse a change; accept that."""


class LLMError(RuntimeError):
    """The LLM endpoint failed (timeout, HTTP error, malformed reply); the message says which."""


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str
    api_key: str = ""
    timeout_seconds: float = 30.0
    max_steps: int = 6  # chat round trips per decision
    max_tool_calls: int = 12  # per decision

    @classmethod
    def from_env(cls, env=os.environ, **overrides) -> "LLMConfig":
        base, model = env.get("TELLM_LLM_BASE_URL", ""), env.get("TELLM_LLM_MODEL", "")
        if not base or not model:
            raise LLMError("the LLM engine needs TELLM_LLM_BASE_URL and TELLM_LLM_MODEL in the environment "
                           "(and TELLM_LLM_API_KEY for hosted APIs)")
        return cls(base_url=base.rstrip("/"), model=model, api_key=env.get("TELLM_LLM_API_KEY", ""), **overrides)


class LLMEngine:
    def __init__(self, config: LLMConfig, transport: httpx.BaseTransport | None = None):
        self.config = config
        self.name = f"llm:{config.model}"
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._http = httpx.Client(base_url=config.base_url, headers=headers, timeout=config.timeout_seconds,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def _complete(self, messages: list[dict]) -> dict:
        body = {"model": self.config.model, "messages": messages, "temperature": 0,
                "tools": [{"type": "function", "function": t} for t in TOOL_SCHEMAS], "tool_choice": "auto"}
        try:
            r = self._http.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise LLMError(f"LLM endpoint {self.config.base_url} timed out after {self.config.timeout_seconds:g} s") \
                from None
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM endpoint {self.config.base_url} unreachable: {exc}") from None
        if r.status_code != 200:
            raise LLMError(f"LLM endpoint answered HTTP {r.status_code}: {r.text[:200]}")
        try:
            msg = r.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"LLM reply is not a chat completion: {r.text[:200]}") from None
        if not isinstance(msg, dict):
            raise LLMError("LLM reply's message is not an object")
        return msg

    def decide(self, tools: PolicyTools) -> dict:
        """One decision: a short tool-calling conversation. Returns a summary (also audited)."""
        audit = tools.actuator.audit
        try:
            state = tools.get_network_state()
        except ToolError as exc:
            state = {"error": str(exc)}
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": "Current network state:\n" + json.dumps(state, default=str)
                     + "\nDecide whether to change the TE policy."}]
        calls: list[dict] = []
        final = ""
        try:
            for _ in range(self.config.max_steps):
                msg = self._complete(messages)
                tool_calls = msg.get("tool_calls") or []
                text = msg.get("content") or ""
                if not isinstance(tool_calls, list):
                    raise LLMError("LLM reply's tool_calls is not a list")
                if not tool_calls:
                    final = text
                    break
                messages.append({"role": "assistant", "content": text or None, "tool_calls": tool_calls})
                for tc in tool_calls:
                    calls.append(self._run_tool_call(tools, tc, text, messages, len(calls)))
            else:
                final = f"stopped after {self.config.max_steps} steps"
        except LLMError as exc:
            audit.record(self.name, "llm", {"steps": len(calls)}, "", f"error: {exc}")
            log.error("LLM decision failed: %s", exc)
            return {"engine": self.name, "action": "error", "error": str(exc), "tool_calls": calls,
                    "applied": any(c.get("applied") for c in calls)}
        applied = any(c.get("applied") for c in calls)
        audit.record(self.name, "llm", {"tool_calls": [c["name"] for c in calls]}, final,
                     "applied" if applied else "no change")
        return {"engine": self.name, "action": "applied" if applied else "none", "final_message": final,
                "tool_calls": calls, "applied": applied}

    def _run_tool_call(self, tools: PolicyTools, tc, text: str, messages: list[dict], n_before: int) -> dict:
        call_id = tc.get("id", f"call_{n_before}") if isinstance(tc, dict) else f"call_{n_before}"
        fn = tc.get("function") if isinstance(tc, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        args = fn.get("arguments", "{}") if isinstance(fn, dict) else None
        record: dict = {"name": name, "arguments": args}
        try:
            try:
                if n_before >= self.config.max_tool_calls:
                    raise ToolError(f"tool call limit ({self.config.max_tool_calls}) per decision reached")
                if not isinstance(fn, dict) or not isinstance(name, str):
                    raise ToolError("malformed tool call: expected {'function': {'name': ..., 'arguments': ...}}")
            except ToolError as exc:  # refused before dispatch: audited here (dispatch audits its own)
                tools.actuator.audit.record(self.name, "tool_call", repr(tc)[:300], text, f"rejected: {exc}")
                raise
            result = tools.call(name, args, engine=self.name, context=text)
            record.update(ok=True, result=result,
                          applied=bool(result.get("applied")) and name in ("apply_policy", "rollback"))
            content = json.dumps(result, default=str)
        except ToolError as exc:
            record.update(ok=False, error=str(exc), applied=False)
            content = json.dumps({"error": str(exc)})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        return record
