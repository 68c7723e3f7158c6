"""``tellm serve``: the inference service (gRPC over ONNX Runtime) with PolicyService beside it.

The command composes the two services: the inference server gets the policy store's lookup for
Route requests that name no policy, and hosts PolicyService on the same port; neither package
imports the other.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from tellm.contract.security.flags import add_server_args

    from tellm.inference.modelfile import DEFAULT_MAX_MODEL_BYTES
    from tellm.inference.topologies import DEFAULT_MAX_TOPOLOGY_BYTES

    p = sub.add_parser(
        "serve", help="run the inference service (gRPC, ONNX Runtime)",
        description="Serve the TE model over gRPC (tellm.v1.TrafficEngineeringService, plus "
                    "tellm.v1.PolicyService for the active TE policy, grpc.health.v1 and server reflection). "
                    "Controllers register a topology once, then send traffic matrices and get split ratios "
                    "back. Runs on CUDAExecutionProvider when onnxruntime-gpu and a GPU are present, else on "
                    "the CPU. The model file is watched and reloaded when it "
                    "changes (replace it atomically: write a temp file, then rename). SIGTERM/SIGINT shut "
                    "down gracefully.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on for gRPC and metrics (0.0.0.0 or :: for all interfaces)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0 = any free port, printed at start)")
    p.add_argument("--model", type=Path, default=None, metavar="FILE.onnx",
                   help="ONNX model with the tellm TE interface (default: the model shipped in the package, "
                        "tellm/inference/models/tellm-te.onnx)")
    p.add_argument("--metrics-port", type=int, default=9102,
                   help="Prometheus /metrics port (0 = any free port, -1 = off)")
    p.add_argument("--provider", choices=["auto", "cuda", "cpu"], default="auto",
                   help="execution provider: auto uses CUDA when available and falls back to the CPU")
    p.add_argument("--workers", type=int, default=8, help="gRPC handler threads (concurrent requests)")
    p.add_argument("--max-parallel-runs", type=int, default=4,
                   help="model runs at once; further requests queue until a slot frees or their deadline "
                        "passes (bounds memory on large topologies)")
    p.add_argument("--ort-threads", type=int, default=0,
                   help="onnxruntime intra-op threads per run (0 = onnxruntime's default: one per core)")
    p.add_argument("--no-specialise", dest="specialise", action="store_false",
                   help="serve every topology through the generic graph (default: a graph specialised to each "
                        "registered topology, built in the background after registration while the generic graph "
                        "serves it, with concurrent same-topology requests batched into one run)")
    p.add_argument("--head-mlp-dtype", choices=["auto", "float32", "float16"], default="auto",
                   help="float type of the refinement MLP in the specialised graphs: auto = float16 for large "
                        "topologies on CUDA (faster; MLU within about 1e-5 of float32, see benchmarks/README.md), "
                        "float32 on the CPU and for small topologies")
    p.add_argument("--max-batch", type=int, default=32,
                   help="most Route requests of one topology served by one model run")
    p.add_argument("--batch-window", type=float, default=0.0, metavar="SECONDS",
                   help="how long a run waits for more requests of its topology (0 = batch only those "
                        "already queued behind a running one)")
    p.add_argument("--watch-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often to check the model file for changes (0 = never)")
    p.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                   help="on shutdown, how long in-flight requests may take to finish")
    p.add_argument("--max-topologies", type=int, default=64,
                   help="registered topologies kept (least recently used dropped first)")
    p.add_argument("--max-topology-bytes", type=int, default=DEFAULT_MAX_TOPOLOGY_BYTES, metavar="BYTES",
                   help="memory all registered topologies may hold (least recently used dropped first; a single "
                        "larger registration is refused with RESOURCE_EXHAUSTED)")
    p.add_argument("--policy-state", type=Path, default=None, metavar="FILE",
                   help="keep the active TE policy (set through PolicyService) in this file across restarts "
                        "(an append-only journal, compacted as it grows)")
    s = p.add_argument_group("admin calls (ReloadModel, SetPolicy)")
    s.add_argument("--model-dir", type=Path, default=None, metavar="DIR",
                   help="ReloadModel only loads regular files inside this directory (symlinks resolved; relative "
                        "paths are taken inside it); default: the directory of --model")
    s.add_argument("--max-model-bytes", type=int, default=DEFAULT_MAX_MODEL_BYTES, metavar="BYTES",
                   help="largest model file the server reads")
    s.add_argument("--audit-log", type=Path, default=None, metavar="FILE.jsonl",
                   help="append every admin call (who, what, result) to this file as JSON lines; every admin call "
                        "is also one WARNING line in the server log")
    s.add_argument("--policy-max-changes", type=int, default=10, metavar="N",
                   help="SetPolicy accepts at most N changes per topology in any --policy-window-seconds; further "
                        "calls get RESOURCE_EXHAUSTED")
    s.add_argument("--policy-window-seconds", type=float, default=60.0, metavar="SECONDS",
                   help="the window of --policy-max-changes")
    add_server_args(p)
    p.set_defaults(func=run)


def build_server(config, policy_state_file: str | Path | None = None, audit=None, policy_limit=None):
    """An InferenceServer (not started) for ``config`` that hosts PolicyService and routes requests
    without a policy by the policy store's active policy (kept in ``policy_state_file`` when given).
    ``audit`` (tellm.contract.security.audit.AdminAudit) records the admin calls of both services;
    ``policy_limit`` (tellm.policy.admission.LimitConfig) is SetPolicy's rate limit."""
    from tellm.contract.vocabulary import POLICY_SERVICE_NAME
    from tellm.inference.server import HostedService, InferenceServer
    from tellm.policy.admission import ChangeLimiter, LimitConfig
    from tellm.policy.service import PolicyStore, add_policy_service
    from tellm.contract.security.audit import AdminAudit

    audit = audit or AdminAudit()
    limiter = ChangeLimiter(policy_limit or LimitConfig())
    store = PolicyStore(state_file=policy_state_file)
    policy_service = HostedService(POLICY_SERVICE_NAME,
                                   lambda server: add_policy_service(server, store, audit=audit, limiter=limiter))
    return InferenceServer(config, policy_lookup=store.active_policy_vector, services=[policy_service], audit=audit)


def run(args) -> int:
    from tellm.errors import CLIError
    from tellm.inference.artifacts import DEFAULT_MODEL_PATH
    from tellm.inference.server import ServerConfig, serve
    from tellm.inference.session import ModelError
    from tellm.policy.admission import LimitConfig
    from tellm.contract.security.audit import AdminAudit
    from tellm.contract.security.flags import server_security
    from tellm.contract.security.tls import SecurityConfigError

    try:
        security = server_security(args, args.host)
    except SecurityConfigError as exc:
        raise CLIError(str(exc)) from None
    model = args.model or DEFAULT_MODEL_PATH
    if not model.exists():
        raise CLIError(f"model file {model} does not exist" +
                       ("" if args.model else " (no model is shipped in this install; pass --model FILE.onnx)"))
    for name in ("port", "workers", "max_topologies", "max_parallel_runs", "max_topology_bytes", "max_model_bytes",
                 "policy_max_changes", "max_batch"):
        if getattr(args, name) < (0 if name == "port" else 1):
            raise CLIError(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'port' else '>= 1'}")
    if args.watch_interval < 0 or args.grace < 0 or not args.policy_window_seconds >= 0 or args.batch_window < 0:
        raise CLIError("--watch-interval, --grace, --policy-window-seconds and --batch-window must be >= 0")
    if args.model_dir is not None and not args.model_dir.is_dir():
        raise CLIError(f"--model-dir {args.model_dir} is not a directory")
    if args.model_dir is not None and not model.resolve().is_relative_to(args.model_dir.resolve()):
        raise CLIError(f"--model {model} is not inside --model-dir {args.model_dir}")
    config = ServerConfig(model_path=model, host=args.host, port=args.port,
                          metrics_port=None if args.metrics_port < 0 else args.metrics_port,
                          workers=args.workers, max_parallel_runs=args.max_parallel_runs, provider=args.provider,
                          ort_threads=args.ort_threads, specialise=args.specialise, max_batch=args.max_batch,
                          head_mlp_dtype=args.head_mlp_dtype,
                          batch_window_seconds=args.batch_window,
                          watch_interval_seconds=args.watch_interval, grace_seconds=args.grace,
                          max_topologies=args.max_topologies, max_topology_bytes=args.max_topology_bytes,
                          model_dir=args.model_dir, max_model_bytes=args.max_model_bytes, security=security)
    policy_limit = LimitConfig(args.policy_max_changes, args.policy_window_seconds)

    def ready(server) -> None:
        m = server.models.current
        # One parseable line on stdout: scripts (and the tests) read the bound ports from it.
        print(f"tellm serve: listening on {args.host}:{server.port} metrics_port={server.metrics_port or 'off'} "
              f"provider={m.provider} model_version={m.version}", flush=True)

    try:
        return serve(build_server(config, args.policy_state, AdminAudit(args.audit_log), policy_limit), ready=ready)
    except ModelError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(str(exc)) from None
    finally:
        sys.stdout.flush()
