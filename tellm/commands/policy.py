"""``tellm policy``: TE policies, the policy daemon (rules or an LLM), its MCP server, PolicyService."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from tellm.errors import CLIError
from tellm.contract.security.flags import add_client_args, add_server_args

log = logging.getLogger("tellm.policy")


def _add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network state (one source)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--state-url", default="http://127.0.0.1:9100/state",
                     help="the controller's state API (default: %(default)s)")
    src.add_argument("--prometheus", metavar="URL", help="read tellm_mlu_ratio / tellm_link_utilization_ratio "
                     "from this Prometheus instead (no traffic matrix: evaluate_policy is then unavailable)")
    src.add_argument("--replay", metavar="FILE", help="replay recorded controller /state snapshots (JSON list)")
    g.add_argument("--topology", "-t", metavar="NAME|FILE", help="topology for what-if evaluation (the file the "
                   "controller uses, for link latencies); default: the topology in the controller's state")
    g = p.add_argument_group("services")
    g.add_argument("--policy-service", default="127.0.0.1:50051", metavar="HOST:PORT",
                   help="gRPC address of PolicyService (served by `tellm serve` or `tellm policy serve`)")
    g.add_argument("--topology-id", default="", help="policy scope: a registered topology id ('' = default)")
    g.add_argument("--inference", metavar="HOST:PORT", default="127.0.0.1:50051",
                   help="inference service used for what-if (Route with an explicit policy); "
                        "'' = always use the LP")
    add_client_args(p, "PolicyService and the inference service")
    g = p.add_argument_group("guardrails")
    g.add_argument("--min-change-interval", type=float, default=300.0, metavar="SECONDS",
                   help="at most one policy change per this many seconds (default %(default)s)")
    g.add_argument("--rollback-threshold", type=float, default=0.10, metavar="FRACTION",
                   help="roll back when MLU rises more than this fraction after a change (default %(default)s)")
    g.add_argument("--rollback-window", type=float, default=60.0, metavar="SECONDS",
                   help="how long after a change a regression triggers a rollback (default %(default)s)")
    g.add_argument("--dry-run", action="store_true", help="decide and audit, never apply")
    g.add_argument("--audit", default="policy-audit.jsonl", metavar="FILE",
                   help="JSONL audit log of every action (default %(default)s)")


def register(sub) -> None:
    p = sub.add_parser("policy", help="TE policies: daemon (rules/LLM), MCP server, PolicyService",
                       description="Choose the TE objective the learned model optimises, without retraining. "
                                   "Policies: min_mlu, headroom(fraction), latency_aware(weight).")
    psub = p.add_subparsers(dest="policy_command", metavar="<action>")

    q = psub.add_parser("run", help="the policy daemon: watch state, decide (rules or LLM), apply via gRPC",
                        description="Poll network state, roll back changes that make MLU worse, and every "
                                    "--decide-every polls ask the engine for a decision. The LLM engine reads "
                                    "TELLM_LLM_BASE_URL, TELLM_LLM_MODEL and TELLM_LLM_API_KEY.")
    q.add_argument("--engine", choices=["rules", "llm"], default="rules", help="decision engine (default rules)")
    q.add_argument("--poll-interval", type=float, default=5.0, metavar="SECONDS")
    q.add_argument("--decide-every", type=int, default=6, metavar="POLLS")
    q.add_argument("--max-polls", type=int, default=None, help="stop after this many polls (default: forever)")
    q.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0 = off)")
    q.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDRESS",
                   help="address the metrics endpoint binds (default %(default)s; 0.0.0.0 in a container)")
    q.add_argument("--llm-timeout", type=float, default=30.0, metavar="SECONDS")
    _add_source_args(q)
    q.set_defaults(func=_run)

    m = psub.add_parser("mcp", help="MCP server over stdio exposing the policy tools",
                        description="An MCP server (stdio) with get_network_state, get_mlu_history, "
                                    "list_policies, evaluate_policy, apply_policy, rollback. A background "
                                    "loop polls state (MLU history, automatic rollback) meanwhile.")
    m.add_argument("--poll-interval", type=float, default=5.0, metavar="SECONDS")
    _add_source_args(m)
    m.set_defaults(func=_mcp)

    s = psub.add_parser("serve", help="run PolicyService on its own (normally it lives in `tellm serve`)")
    s.add_argument("--listen", default="127.0.0.1:50052", metavar="HOST:PORT")
    s.add_argument("--state-file", help="persist the active policies here across restarts (an append-only journal)")
    s.add_argument("--audit-log", default=None, metavar="FILE.jsonl",
                   help="append every SetPolicy call (who, what, result) to this file; each is also a WARNING line "
                        "in the log")
    add_server_args(s)
    s.set_defaults(func=_serve)

    lst = psub.add_parser("list", help="policies, parameters and bounds (from PolicyService, or local with --local)")
    lst.add_argument("--policy-service", default="127.0.0.1:50051", metavar="HOST:PORT")
    lst.add_argument("--local", action="store_true", help="print the built-in table without contacting the service")
    add_client_args(lst, "PolicyService")
    lst.set_defaults(func=_list)

    g = psub.add_parser("get", help="the active policy")
    g.add_argument("--policy-service", default="127.0.0.1:50051", metavar="HOST:PORT")
    g.add_argument("--topology-id", default="")
    add_client_args(g, "PolicyService")
    g.set_defaults(func=_get)

    st = psub.add_parser("set", help="apply a policy by hand (the service's bounds and rate limit apply; audited "
                                     "in the service's log; needs an admin token where tokens are on)")
    st.add_argument("name", help="policy name (see `tellm policy list --local`)")
    st.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    st.add_argument("--reason", required=True)
    st.add_argument("--policy-service", default="127.0.0.1:50051", metavar="HOST:PORT")
    st.add_argument("--topology-id", default="")
    add_client_args(st, "PolicyService")
    st.set_defaults(func=_set)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _source(args):
    from tellm.policy.state import ControllerStateSource, PrometheusStateSource, RecordedStateSource

    if args.replay:
        try:
            with open(args.replay) as f:
                return RecordedStateSource(json.load(f))
        except (OSError, ValueError) as exc:
            raise CLIError(f"--replay {args.replay}: {exc}") from None
    if args.prometheus:
        return PrometheusStateSource(args.prometheus)
    return ControllerStateSource(args.state_url)


def build_tools(args, metrics=None):
    from tellm.contract.policy_client import PolicyClient
    from tellm.policy.guard import Actuator, AuditLog, GuardConfig, PolicyMetrics
    from tellm.policy.tools import PolicyTools, WhatIf

    try:
        cfg = GuardConfig(min_change_interval_seconds=args.min_change_interval,
                          rollback_threshold=args.rollback_threshold, rollback_window_seconds=args.rollback_window,
                          dry_run=args.dry_run, topology_id=args.topology_id)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    topo = None
    if args.topology:
        from tecore import load_topology

        topo = load_topology(args.topology)
    security = _security(args)
    actuator = Actuator(PolicyClient(args.policy_service, security=security), cfg, AuditLog(args.audit),
                        metrics or PolicyMetrics())
    return PolicyTools(actuator, _source(args), whatif=WhatIf(topo, inference_address=args.inference or None,
                                                               security=security))


def _run(args) -> int:
    from tellm.policy.daemon import PolicyDaemon

    tools = build_tools(args)
    if args.engine == "llm":
        from tellm.policy.llm import LLMConfig, LLMEngine, LLMError

        try:
            engine = LLMEngine(LLMConfig.from_env(timeout_seconds=args.llm_timeout))
        except LLMError as exc:
            raise CLIError(str(exc)) from None
    else:
        from tellm.policy.rules import RuleEngine

        engine = RuleEngine()
    if args.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port, addr=args.metrics_host, registry=tools.actuator.metrics.registry)
        except OSError as exc:
            raise CLIError(f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc}") from None
    try:
        daemon = PolicyDaemon(tools, engine, args.poll_interval, args.decide_every)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    daemon.run(stop, args.max_polls, on_step=lambda out: print(json.dumps(out, default=str), flush=True))
    return 0


def _mcp(args) -> int:
    from tellm.policy.mcp_server import build_server

    from tellm.policy.daemon import start_background

    logging.getLogger().handlers[:] = [logging.StreamHandler(sys.stderr)]  # stdout is the MCP channel
    if args.poll_interval <= 0:
        raise CLIError("--poll-interval must be > 0")
    tools = build_tools(args)
    stop, _ = start_background(tools, args.poll_interval)
    try:
        build_server(tools).run("stdio")
    finally:
        stop.set()
    return 0


def _security(args):
    """ClientSecurity from the client flags (an operator error when a file is unusable)."""
    from tellm.contract.security.flags import client_security
    from tellm.contract.security.tls import SecurityConfigError

    try:
        return client_security(args)
    except SecurityConfigError as exc:
        raise CLIError(str(exc)) from None


def _serve(args) -> int:
    from tellm.policy.service import PolicyStore, serve
    from tellm.contract.security.audit import AdminAudit
    from tellm.contract.security.flags import server_security
    from tellm.contract.security.tls import SecurityConfigError

    try:
        security = server_security(args, args.listen.rsplit(":", 1)[0])
        server, port, _ = serve(args.listen, PolicyStore(args.state_file), security=security,
                                audit=AdminAudit(args.audit_log))
    except (OSError, SecurityConfigError) as exc:
        raise CLIError(str(exc)) from None
    print(f"PolicyService listening on port {port}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop(grace=1.0).wait()
    return 0


def _client(args):
    from tellm.contract.policy_client import PolicyClient

    return PolicyClient(args.policy_service, security=_security(args))


def _call(fn):
    from tellm.contract.policies import PolicyError
    from tellm.contract.policy_client import PolicyServiceError

    try:
        return fn()
    except (PolicyServiceError, PolicyError) as exc:
        raise CLIError(str(exc)) from None


def _list(args) -> int:
    from tellm.contract.policies import list_policies

    doc = list_policies() if args.local else _call(lambda: _client(args).list_policies())
    print(json.dumps(doc, indent=2))
    return 0


def _get(args) -> int:
    print(json.dumps(_call(lambda: _client(args).get_policy(args.topology_id)).to_dict(), indent=2))
    return 0


def _set(args) -> int:
    from tellm.contract.policies import make_policy

    params = {}
    for kv in args.param:
        k, sep, v = kv.partition("=")
        try:
            params[k] = float(v)
        except ValueError:
            raise CLIError(f"--param {kv!r}: expected NAME=NUMBER") from None
        if not sep:
            raise CLIError(f"--param {kv!r}: expected NAME=NUMBER")
    policy = _call(lambda: make_policy(args.name, params))
    applied, prev = _call(lambda: _client(args).set_policy(policy, args.topology_id, args.reason, actor="cli"))
    print(json.dumps({"applied": applied.to_dict(), "previous": prev.to_dict()}, indent=2))
    return 0
