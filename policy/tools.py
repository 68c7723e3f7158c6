"""The six tools an engine (an LLM through tool calling, an MCP client, the rule engine) may use.

get_network_state, get_mlu_history, list_policies, evaluate_policy, apply_policy, rollback. Each
takes a JSON object of arguments and returns a JSON-able dict; bad arguments raise ``ToolError``
with a message meant to be shown to the caller (LLM or agent), and nothing is applied.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from tecore import PathSet, Topology, compute_paths
from tecore.objectives import evaluate_objective, solve_policy_lp
from tellm.contract.client import InferenceClient, InferenceError
from tellm.contract.policies import POLICIES, PolicyError, list_policies, make_policy

from .guard import ActionRejected, Actuator
from .state import MluHistory, NetworkState, StateError, StateSource

log = logging.getLogger(__name__)


class ToolError(Exception):
    """A tool call that cannot run (unknown tool, malformed or out-of-bound arguments, guardrail)."""


_POLICY_ARGS = {
    "policy": {"type": "string", "enum": list(POLICIES), "description": "policy name (see list_policies)"},
    "params": {"type": "object", "additionalProperties": {"type": "number"},
               "description": "parameters by name within the bounds list_policies gives; missing = default"},
}

TOOL_SCHEMAS: list[dict] = [
    {"name": "get_network_state", "description": "Current network state: MLU, hottest links, traffic total, "
     "active policy.", "parameters": {"type": "object", "properties": {}, "additionalProperties": False}},
    {"name": "get_mlu_history", "description": "Recent MLU samples and their statistics (min/max/mean/std).",
     "parameters": {"type": "object", "properties": {
         "last": {"type": "integer", "minimum": 1, "maximum": 3600, "description": "number of most recent samples"}},
         "additionalProperties": False}},
    {"name": "list_policies", "description": "Known policies with their parameters, bounds and the active policy.",
     "parameters": {"type": "object", "properties": {}, "additionalProperties": False}},
    {"name": "evaluate_policy", "description": "What-if: route the current traffic matrix under a candidate "
     "policy and report MLU, utilisation against the headroom cap, latency stretch. Applies nothing.",
     "parameters": {"type": "object", "properties": _POLICY_ARGS, "required": ["policy"],
                    "additionalProperties": False}},
    {"name": "apply_policy", "description": "Make a policy active (guardrails: bounds, at most one change per "
     "interval, automatic rollback on MLU regression). State your reason.",
     "parameters": {"type": "object", "properties": {
         **_POLICY_ARGS, "reason": {"type": "string", "description": "why this change (audited)"}},
         "required": ["policy", "reason"], "additionalProperties": False}},
    {"name": "rollback", "description": "Return to the policy that was active before the last change.",
     "parameters": {"type": "object", "properties": {
         "reason": {"type": "string", "description": "why (audited)"}}, "required": ["reason"],
         "additionalProperties": False}},
]
TOOL_NAMES = tuple(t["name"] for t in TOOL_SCHEMAS)


def topology_from_state(doc: dict, default_latency_seconds: float = 1e-3) -> Topology:
    """A tecore Topology from the controller's /state "topology" object (links in id order)."""
    try:
        nodes = tuple(doc["nodes"])
        idx = {n: i for i, n in enumerate(nodes)}
        links = sorted(doc["links"], key=lambda l: int(l["id"]))
        return Topology(name=str(doc.get("name") or "controller"), nodes=nodes,
                        src=np.array([idx[l["src"]] for l in links]), dst=np.array([idx[l["dst"]] for l in links]),
                        capacity_bps=np.array([float(l["capacity_bps"]) for l in links]),
                        weight=np.array([float(l.get("weight", 1.0)) for l in links]),
                        latency_seconds=np.array([float(l.get("latency_seconds", default_latency_seconds))
                                                  for l in links]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"controller state has an unusable topology: {exc!r}") from None


@dataclass
class _Registered:
    topo: Topology
    paths: PathSet


class WhatIf:
    """Routes a TM under a candidate policy: through the inference service's Route with an explicit
    policy vector when it answers, else with tecore's per-policy LP. Each answer says which."""

    def __init__(self, topology: Topology | None = None, k: int = 4, inference_address: str | None = None,
                 inference_timeout_seconds: float = 2.0, security=None):
        self.topology = topology
        self.security = security  # tellm.contract.security.settings.ClientSecurity for the inference service
        self.k = k
        self.inference_address = inference_address
        self.inference_timeout_seconds = inference_timeout_seconds
        self._paths: dict[str, _Registered] = {}
        self._client = None
        self._handle = None
        self._lock = threading.Lock()

    def _topo_paths(self, state: NetworkState) -> _Registered:
        topo = self.topology
        if topo is None:
            if state.topology is None:
                raise ToolError("no topology: give the daemon --topology or read state from the controller API")
            topo = topology_from_state(state.topology)
        reg = self._paths.get(topo.content_hash)
        if reg is None:
            reg = self._paths[topo.content_hash] = _Registered(topo, compute_paths(topo, k=self.k))
        return reg

    def _route_model(self, reg: _Registered, demand: np.ndarray, vector: np.ndarray) -> tuple[np.ndarray, str] | None:
        if not self.inference_address:
            return None
        try:
            if self._client is None:
                kw = {"security": self.security} if self.security is not None else {}
                self._client = InferenceClient(self.inference_address, timeout_seconds=self.inference_timeout_seconds,
                                               retries=0, **kw)
            if self._handle is None or self._handle[0] != reg.topo.content_hash:
                h = self._client.register_topology(reg.topo, reg.paths, topology_id=f"policy-whatif-{reg.topo.name}")
                self._handle = (reg.topo.content_hash, h)
            reply = self._client.route(self._handle[1], demand, policy=vector)
            return np.asarray(reply.split, dtype=np.float64), f"model {reply.model_version} via inference gRPC Route " \
                                                               f"at {self.inference_address}"
        except InferenceError as exc:
            log.info("inference service did not answer the what-if (%s); using the LP", exc)
            return None

    def evaluate(self, state: NetworkState, name: str, params: dict | None) -> dict:
        policy = make_policy(name, params)
        if state.traffic_matrix_bps is None:
            raise ToolError("the state source has no traffic matrix (Prometheus); what-if needs the controller API")
        with self._lock:
            reg = self._topo_paths(state)
            tm = state.traffic_matrix_bps
            if tm.shape != (reg.topo.num_nodes, reg.topo.num_nodes):
                raise ToolError(f"traffic matrix is {tm.shape}, topology has {reg.topo.num_nodes} nodes")
            demand = tm[reg.paths.pairs[:, 0], reg.paths.pairs[:, 1]]
            lam, h = policy.latency_weight, policy.headroom_fraction
            routed = self._route_model(reg, demand, policy.to_vector())
            if routed is None:
                res = solve_policy_lp(reg.topo, reg.paths, demand, latency_weight=lam, headroom_fraction=h)
                why = "inference service not reachable" if self.inference_address else "no inference service configured"
                value, engine = res.value, f"tecore per-policy LP (HiGHS); {why}"
            else:
                split, engine = routed
                value = evaluate_objective(reg.topo, reg.paths, demand, split, lam, h)
        return {"policy": policy.to_dict(), "evaluated_with": engine, **value.to_dict(),
                "current_measured_mlu": state.mlu}


class PolicyTools:
    """Dispatches tool calls; shared by the LLM engine, the MCP server and the rule engine."""

    def __init__(self, actuator: Actuator, source: StateSource, history: MluHistory | None = None,
                 whatif: WhatIf | None = None):
        self.actuator = actuator
        self.source = source
        self.history = history or MluHistory()
        self.whatif = whatif or WhatIf()
        self._state: NetworkState | None = None

    # The daemon refreshes state every poll; tools use the latest (reading now if there is none).
    def refresh(self) -> NetworkState:
        st = self.source.read()
        self._state = st
        self.history.add(st)
        return st

    def state(self) -> NetworkState:
        return self._state if self._state is not None else self.refresh()

    def _active(self) -> dict:
        try:
            return self.actuator.current().to_dict()
        except ActionRejected as exc:
            raise ToolError(str(exc)) from None

    # ------------------------------------------------------------------ tools
    def get_network_state(self) -> dict:
        try:
            st = self.state()
        except StateError as exc:
            raise ToolError(str(exc)) from None
        return {**st.summary(), "active_policy": self._active()}

    def get_mlu_history(self, last: int = 60) -> dict:
        if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= 3600:
            raise ToolError(f"get_mlu_history: 'last' must be an integer in [1, 3600], got {last!r}")
        return {"samples": [{"time_unix_seconds": t, "mlu": m} for t, m in self.history.items(last)],
                "stats": self.history.stats(last)}

    def list_policies(self) -> dict:
        return {"policies": list_policies(), "active": self._active(),
                "seconds_until_next_change_allowed": self.actuator.seconds_until_next_change()}

    def evaluate_policy(self, policy: str, params: dict | None = None) -> dict:
        try:
            return self.whatif.evaluate(self.state(), policy, params)
        except (PolicyError, StateError) as exc:
            raise ToolError(str(exc)) from None

    def apply_policy(self, policy: str, reason: str, params: dict | None = None, engine: str = "?") -> dict:
        try:
            return self.actuator.apply(policy, params, reason, engine)
        except ActionRejected as exc:
            raise ToolError(str(exc)) from None

    def rollback(self, reason: str, engine: str = "?") -> dict:
        try:
            return self.actuator.rollback(reason, engine)
        except ActionRejected as exc:
            raise ToolError(str(exc)) from None

    # ------------------------------------------------------------------ dispatch
    def call(self, name: Any, arguments: Any, engine: str, context: str = "") -> dict:
        """Run tool ``name`` with ``arguments`` (a JSON object or its text). Raises ToolError.

        apply_policy and rollback are audited by the Actuator; every other call, and every call
        refused here before reaching it, is audited here (``context``: e.g. the LLM's message).
        """
        audit = self.actuator.audit
        reaches_actuator = False
        try:
            args = self._check_args(name, arguments)
            if name in ("apply_policy", "rollback"):
                if name == "apply_policy":
                    try:  # validated before anything runs, so the error names the bound
                        make_policy(args["policy"], args.get("params"))
                    except PolicyError as exc:
                        self.actuator.metrics.rejected.labels(tool=name).inc()
                        raise ToolError(f"{name}: {exc}") from None
                reaches_actuator = True
                return getattr(self, name)(**args, engine=engine)
            result = getattr(self, name)(**args)
            audit.record(engine, name, args, context, "ok")
            return result
        except ToolError as exc:
            if not reaches_actuator:
                audit.record(engine, str(name)[:100], arguments if isinstance(arguments, (dict, str)) else repr(arguments),
                             context, f"rejected: {exc}")
            raise

    def _check_args(self, name: Any, arguments: Any) -> dict:
        if name not in TOOL_NAMES:
            raise ToolError(f"unknown tool {name!r} (tools: {', '.join(TOOL_NAMES)})")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolError(f"{name}: arguments are not valid JSON ({exc.msg} at char {exc.pos})") from None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolError(f"{name}: arguments must be a JSON object, got {type(arguments).__name__}")
        schema = next(t for t in TOOL_SCHEMAS if t["name"] == name)["parameters"]
        allowed, required = set(schema["properties"]), set(schema.get("required", ()))
        extra = sorted(set(arguments) - allowed)
        if extra:
            raise ToolError(f"{name}: unexpected argument {extra[0]!r} (allowed: {', '.join(sorted(allowed)) or 'none'})")
        missing = sorted(required - set(arguments))
        if missing:
            raise ToolError(f"{name}: missing required argument {missing[0]!r}")
        if arguments.get("params") is not None and not isinstance(arguments["params"], dict):
            raise ToolError(f"{name}: 'params' must be an object of name -> number")
        return arguments
