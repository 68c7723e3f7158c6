"""``tellm controller``: the os-ken OpenFlow 1.5 TE controller (see controller/ for the design)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from tellm.errors import CLIError

from tellm.contract.security.flags import add_client_args

from .common import add_path_args, add_topology_args


def register(sub) -> None:
    p = sub.add_parser(
        "controller", help="run the SDN controller (os-ken, OpenFlow 1.5, dp_hash select groups)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run the tellm controller. Switches (OpenFlow 1.5 bridges, e.g. Mininet OVSSwitch with "
                    "protocols=OpenFlow15) connect to --of-port. Every --poll-interval the controller reads "
                    "port and ingress-rule counters, estimates the traffic matrix, asks the router for split "
                    "ratios over the candidate paths and installs them as weighted dp_hash select groups "
                    "that push a per-path MPLS label (make-before-break). Metrics on --metrics-port "
                    "(Prometheus), state as JSON on --api-port (GET /state). Stop with Ctrl-C or SIGTERM. "
                    "The topology file is optional but recommended: without --topology the controller "
                    "discovers switches (OpenFlow handshake), links (LLDP) and port speeds (OpenFlow 1.5 port "
                    "description) and, once nothing has changed for --discovery-settle-seconds, names the "
                    "switches s<dpid>, computes candidate paths and starts routing; it rebuilds when a switch or "
                    "link appears later. Port speeds are what the switch reports, not shaped rates (Mininet "
                    "veth ports report 10 Gbit/s whatever the TCLink rate), so give a YAML file for true "
                    "capacities.")
    add_topology_args(p, required=False,
                      topology_help="; optional: without it the topology is discovered from the switches "
                                    "(see --discovery-settle-seconds). With it, discovered links are "
                                    "reconciled with the file (undeclared ones logged and unused, declared "
                                    "ones not discovered count as down)",
                      capacity_help="; without --topology: the capacity of discovered links whose ports "
                                    "report no speed (logged, and listed in GET /state under "
                                    "discovery.default_capacity_links)")
    add_path_args(p)
    g = p.add_argument_group("controller")
    g.add_argument("--router", choices=["model", "lp", "ecmp"], default="model",
                   help="model: the inference service (falls back to the last good routing, then LP for <= 60 "
                        "nodes else shortest paths); lp: min-MLU LP in-process; ecmp: shortest-path baseline")
    g.add_argument("--inference", default="127.0.0.1:50051", metavar="HOST:PORT",
                   help="address of the inference service (tellm serve)")
    g.add_argument("--inference-timeout", type=float, default=3.0, metavar="SECONDS",
                   help="deadline of one inference request; past it the fallback chain acts (last good routing, "
                        "then LP or ECMP). The control interval does not wait for the model longer than half a "
                        "--poll-interval: a later answer is installed at a following interval (GET /state "
                        "routing.age_seconds)")
    g.add_argument("--of-port", type=int, default=6653, help="OpenFlow listening port")
    g.add_argument("--of-host", default="127.0.0.1", help="OpenFlow listening address")
    add_client_args(p, "the inference service, --inference")
    t = p.add_argument_group("OpenFlow TLS (switches connect with ssl:HOST:PORT; see ovs-vsctl set-ssl)")
    t.add_argument("--ofp-ssl-cert", default=None, metavar="FILE.pem",
                   help="controller certificate; with --ofp-ssl-key, --of-port accepts TLS connections only")
    t.add_argument("--ofp-ssl-key", default=None, metavar="FILE.pem", help="private key of --ofp-ssl-cert")
    t.add_argument("--ofp-ssl-ca", default=None, metavar="FILE.pem",
                   help="CA certificate(s): switches must present a certificate signed by one (mutual TLS)")
    g.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS",
                   help="counter polling and control interval")
    g.add_argument("--metrics-port", type=int, default=9101, help="Prometheus /metrics port (0 = off)")
    g.add_argument("--api-port", type=int, default=9100, help="JSON API port, GET /state (0 = off)")
    g.add_argument("--http-host", default="127.0.0.1", help="address of the metrics and API servers")
    g.add_argument("--ewma-alpha", type=float, default=1.0,
                   help="weight of the newest TM measurement in the EWMA (1 = no smoothing)")
    g.add_argument("--history", type=int, default=60, help="TM snapshots kept in the history window")
    g.add_argument("--reroute-threshold", type=float, default=0.0, metavar="FRACTION",
                   help="reroute only when the TM changed by more than this (relative L1); 0 = every interval")
    g.add_argument("--total-weight", type=int, default=256,
                   help="bucket weights of a pair sum to this (per-bucket error < 1/W; OVS dp_hash needs <= 256)")
    g.add_argument("--discovery-settle-seconds", type=float, default=3.0, metavar="SECONDS",
                   help="without --topology: route once the discovered switches, links and port speeds have not "
                        "changed for this long (rounded up to whole --poll-interval periods, at least one)")
    g.add_argument("--weight-deadband", type=float, default=0.1, metavar="DISTANCE",
                   help="keep a pair's installed split while the router's new one is within this L1 distance of it "
                        "(sum over its paths of the change of share, 0-2: 0.1 = at most 5%% of the pair's traffic "
                        "would change path), a path starting or stopping included; a path that died or a repair "
                        "always acts at once. Fewer group and label rewrites from a model's interval-to-interval "
                        "noise; GET /state predicts loads from the installed split. 0 = off")
    g.add_argument("--deadband-load", type=float, default=0.005, metavar="FRACTION",
                   help="also keep a pair's installed split while the traffic that would change path (its demand x "
                        "half the L1 distance) is at most this fraction of the smallest link capacity on its paths: "
                        "measurement noise on small demands rewrites no groups. Held pairs never put more than 2%% "
                        "of a link's capacity over the router's own load on it (those are re-planned). 0 = off")
    g.add_argument("--min-path-weight", type=float, default=0.03, metavar="SHARE",
                   help="paths with a smaller share of their pair than this get no bucket and no labels (the pair's "
                        "other paths take their traffic, renormalised; its largest path always stays). 0 = off")
    # Defaults as ControllerConfig's (tellm.controller.core; literal here so that --help stays light).
    g.add_argument("--of-window", type=int, default=4096, metavar="MESSAGES",
                   help="OpenFlow messages per switch sent but not yet confirmed by a barrier reply: a big update "
                        "is sent in chunks of half this, so a switch never queues more")
    g.add_argument("--of-max-rate", type=float, default=50_000.0, metavar="MESSAGES_PER_SECOND",
                   help="cap on OpenFlow update messages per second per switch; 0 = no cap")
    p.set_defaults(func=run)


def _dpids(topo, spec: str) -> dict[str, int]:
    """``dpids:`` from a YAML topology, else the addressing contract's default (i-th node = dpid i)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") and path.exists():
        import yaml

        doc = yaml.safe_load(path.read_text()) or {}
        d = doc.get("dpids")
        if d is not None:
            if not isinstance(d, dict):
                raise CLIError(f"{spec}: 'dpids' must map node names to datapath ids")
            try:
                return {str(k): int(v) for k, v in d.items()}
            except (TypeError, ValueError):
                raise CLIError(f"{spec}: datapath ids must be integers") from None
    return {n: i + 1 for i, n in enumerate(topo.nodes)}


def _config(args):
    from tellm.controller.core import ControllerConfig

    window, rate = args.of_window, args.of_max_rate
    if window < 2:
        raise CLIError("--of-window must be at least 2 messages")
    if not (rate >= 0 and math.isfinite(rate)):
        raise CLIError("--of-max-rate must be a number >= 0 (0 = no cap)")
    return ControllerConfig(poll_interval_seconds=args.poll_interval, reroute_threshold=args.reroute_threshold,
                            ewma_alpha=args.ewma_alpha, history=args.history, total_weight=args.total_weight,
                            weight_deadband=args.weight_deadband, min_path_weight=args.min_path_weight,
                            deadband_load=args.deadband_load,
                            of_window_messages=window,
                            of_max_messages_per_second=rate)


def _router(args, metrics, num_nodes: int | None):
    from tellm.controller.routers import make_router
    from tellm.contract.security.flags import client_security
    from tellm.contract.security.tls import SecurityConfigError

    metrics.set_router(args.router)
    try:
        security = client_security(args)
    except SecurityConfigError as exc:
        raise CLIError(str(exc)) from None
    return make_router(args.router, num_nodes, inference_address=args.inference,
                       inference_timeout_seconds=args.inference_timeout, inference_security=security,
                       on_request=metrics.inference_duration.observe,
                       on_fallback=lambda reason: metrics.fallbacks.labels(reason=reason).inc())


def _file_core(args):
    """The topology, its dpids and candidate paths from --topology."""
    from tellm.commands.common import load_topology_from_args, paths_from_args
    from tellm.controller.core import ControllerCore
    from tellm.controller.metrics import Metrics

    topo = load_topology_from_args(args)
    paths = paths_from_args(args, topo)
    metrics = Metrics()
    try:
        return ControllerCore(topo, paths, _dpids(topo, args.topology), _router(args, metrics, topo.num_nodes),
                              metrics, _config(args))
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _discovering_core(args):
    """No --topology: a core that learns the topology from the switches (controller/discovery.py)."""
    from tecore import Topology
    from tellm.commands.common import paths_from_args
    from tellm.controller.core import ControllerCore
    from tellm.controller.discovery import TopologyDiscovery, settle_polls
    from tellm.controller.metrics import Metrics

    if not args.default_capacity_bps > 0 or not math.isfinite(args.default_capacity_bps):
        raise CLIError("--default-capacity-bps must be a positive number")
    if not args.discovery_settle_seconds >= 0 or not math.isfinite(args.discovery_settle_seconds):
        raise CLIError("--discovery-settle-seconds must be >= 0")
    # Path search runs inside the controller process, beside os-ken's threads: no forked workers unless asked.
    path_args = argparse.Namespace(**{**vars(args), "workers": args.workers or 1})
    # Bad path options (--k, --max-stretch) fail now rather than when the network has been discovered.
    paths_from_args(path_args, Topology("probe", ("a", "b"), [0, 1], [1, 0], [1e9, 1e9], [1.0, 1.0], [1e-3, 1e-3]),
                    use_cache=False)
    discovery = TopologyDiscovery(args.default_capacity_bps,
                                  settle_polls(args.discovery_settle_seconds, args.poll_interval),
                                  paths_for=lambda topo: paths_from_args(path_args, topo))
    metrics = Metrics()
    logging.getLogger("tellm.controller").warning(
        "no --topology: discovering switches, links (LLDP) and port speeds; routing starts once nothing has "
        "changed for %d poll interval(s); unknown port speeds count as %.3g bit/s", discovery.settle_polls,
        args.default_capacity_bps)
    return ControllerCore(None, None, None, _router(args, metrics, None), metrics, _config(args), discovery)


def run(args) -> int:
    if not args.poll_interval > 0 or not math.isfinite(args.poll_interval):
        raise CLIError("--poll-interval must be a positive number of seconds")
    if not 0 < args.ewma_alpha <= 1:
        raise CLIError("--ewma-alpha must be in (0, 1]")
    if not 1 <= args.total_weight <= 256:
        raise CLIError("--total-weight must be between 1 and 256 (Open vSwitch dp_hash limit)")
    if not 0 <= args.weight_deadband <= 2:
        raise CLIError("--weight-deadband must be an L1 distance between 0 and 2 (0 = off)")
    if not 0 <= args.deadband_load <= 1:
        raise CLIError("--deadband-load must be a fraction of capacity in [0, 1] (0 = off)")
    if not 0 <= args.min_path_weight < 1:
        raise CLIError("--min-path-weight must be a share in [0, 1) (0 = off)")
    for name in ("of_port", "metrics_port", "api_port"):
        v = getattr(args, name)
        if not 0 <= v <= 65535 or (name == "of_port" and v == 0):
            raise CLIError(f"--{name.replace('_', '-')} must be a TCP port")
    from tellm.controller.runner import ServeOptions, check_ofp_tls
    from tellm.controller.runner import run as serve

    options = ServeOptions(of_port=args.of_port, of_host=args.of_host, metrics_port=args.metrics_port or None,
                           api_port=args.api_port or None, http_host=args.http_host, ofp_ssl_cert=args.ofp_ssl_cert,
                           ofp_ssl_key=args.ofp_ssl_key, ofp_ssl_ca=args.ofp_ssl_ca)
    try:
        check_ofp_tls(options)
    except ValueError as exc:
        raise CLIError(str(exc)) from None

    logging.getLogger("tellm.controller").setLevel(min(logging.getLogger().level, logging.WARNING))
    core = _discovering_core(args) if args.topology is None else _file_core(args)
    try:
        code = serve(core, options)
    except OSError as exc:  # a port in use
        raise CLIError(f"cannot listen: {exc}") from None
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # os-ken's OpenFlow listener runs on a non-daemon thread that cannot be stopped: leave now.
    os._exit(code)
