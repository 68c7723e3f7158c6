"""The inference server: gRPC (service + health + reflection), metrics over HTTP, model watcher.

``InferenceServer(config).start()`` runs everything on background threads and returns the bound
port (port 0 picks a free one, as the tests do); ``serve(server)`` is the foreground entry point of
``tellm serve`` and shuts down gracefully on SIGTERM / SIGINT: health turns NOT_SERVING, new calls
are refused, in-flight calls get ``grace_seconds`` to finish.

The server knows nothing of where the active policy comes from: whoever builds it may give a
``policy_lookup`` (topology id -> policy vector, for Route requests that name no policy) and further
gRPC services to host on the same port (``tellm serve`` hosts PolicyService this way).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tellm.contract.v1 import traffic_engineering_service_pb2_grpc as pb_grpc
from tellm.contract.vocabulary import MAX_MESSAGE_BYTES, TE_SERVICE_NAME
from tellm.contract.security.audit import AdminAudit
from tellm.contract.security.settings import ServerSecurity

from .metrics import ServiceMetrics
from .modelfile import DEFAULT_MAX_MODEL_BYTES
from .service import PolicyLookup, TrafficEngineeringServicer
from .session import LoadedModel, ModelHolder, ProviderChoice
from .topologies import DEFAULT_MAX_TOPOLOGY_BYTES, TopologyStore

log = logging.getLogger("tellm.inference.server")

#: How long shutdown waits for a specialised build in progress (it stops at its next phase).
BUILD_STOP_SECONDS = 60.0


@dataclass(frozen=True)
class HostedService:
    """A further gRPC service served on the inference server's port: its full name (for health and
    reflection) and the function that adds its servicer to a ``grpc.Server``."""

    name: str
    add_to_server: Callable[[grpc.Server], object]


@dataclass
class ServerConfig:
    model_path: Path
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = 9102  # None: no metrics endpoint; 0: any free port
    workers: int = 8
    max_parallel_runs: int = 4  # model runs at once; more requests wait (deadline-bounded)
    provider: ProviderChoice = "auto"
    ort_threads: int = 0  # 0: onnxruntime's default
    watch_interval_seconds: float = 1.0  # 0: no file watching
    grace_seconds: float = 5.0
    max_topologies: int = 64
    max_topology_bytes: int = DEFAULT_MAX_TOPOLOGY_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    specialise: bool = True  # per-topology specialised heads with same-topology batching (fastpath.py)
    head_mlp_dtype: str = "auto"  # their refinement MLP's float type (topology_head.MLP_DTYPE_CHOICES)
    max_batch: int = 32  # Route requests of one topology in one run, at most
    batch_window_seconds: float = 0.0  # how long a run waits for more requests (0: batch only what queued)
    model_dir: Path | None = None  # ReloadModel paths must lie inside it (default: the model's directory)
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    security: ServerSecurity = ServerSecurity()  # TLS and tokens (none: plaintext, loopback only)


class InferenceServer:
    def __init__(self, config: ServerConfig, policy_lookup: PolicyLookup | None = None,
                 services: Sequence[HostedService] = (), audit: AdminAudit | None = None):
        """``audit``: where admin calls are recorded (shared with hosted services that have admin
        calls); default: the server log only."""
        self.config = config
        self.audit = audit or AdminAudit()
        self.policy_lookup = policy_lookup
        self.services = tuple(services)
        self.metrics = ServiceMetrics()
        self.models = ModelHolder(Path(config.model_path), provider=config.provider, threads=config.ort_threads,
                                  on_change=self._model_changed, on_reload_failure=self._reload_failed,
                                  model_dir=config.model_dir, max_bytes=config.max_model_bytes)
        self.topologies = TopologyStore(max_topologies=config.max_topologies, max_bytes=config.max_topology_bytes)
        self.health = health.HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._grpc: grpc.Server | None = None
        self._metrics_http = None
        self._stopped = threading.Event()
        self.servicer: TrafficEngineeringServicer | None = None

    def _model_changed(self, model: LoadedModel) -> None:
        self.metrics.set_model(model)
        self.metrics.model_reloads.labels(result="success").inc()
        if self.servicer is not None:
            self.servicer.model_changed(model)
        log.warning("model version %s on %s (%s)", model.version, model.provider, model.path)

    def _reload_failed(self, reason: str) -> None:
        self.metrics.model_reloads.labels(result="failure").inc()

    def _fast_path_options(self) -> dict | None:
        cfg = self.config
        if not cfg.specialise:
            return None
        return {"max_batch": cfg.max_batch, "window_seconds": cfg.batch_window_seconds, "threads": cfg.ort_threads,
                "mlp_dtype": cfg.head_mlp_dtype}

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def start(self) -> int:
        """Load the model and start serving; returns the gRPC port. Raises ModelError on a bad model."""
        cfg = self.config
        cfg.security.check_bind(cfg.host)
        self.models.load_initial()
        options = [("grpc.max_send_message_length", cfg.max_message_bytes),
                   ("grpc.max_receive_message_length", cfg.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="rpc"),
                             options=options, maximum_concurrent_rpcs=None,
                             interceptors=cfg.security.interceptors(self.audit))
        self.servicer = TrafficEngineeringServicer(self.models, self.topologies, self.metrics, cfg.max_parallel_runs,
                                                   policy_lookup=self.policy_lookup, audit=self.audit,
                                                   fast_path=self._fast_path_options())
        pb_grpc.add_TrafficEngineeringServiceServicer_to_server(self.servicer, server)
        for service in self.services:
            service.add_to_server(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (TE_SERVICE_NAME, *(s.name for s in self.services),
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server)
        host = cfg.host if ":" not in cfg.host or cfg.host.startswith("[") else f"[{cfg.host}]"
        port = cfg.security.add_port(server, f"{host}:{cfg.port}")
        if port == 0:
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port} (address in use?)")
        server.start()
        self._grpc, self.port = server, port
        if cfg.metrics_port is not None:
            from prometheus_client import start_http_server

            self._metrics_http, _ = start_http_server(cfg.metrics_port, addr=cfg.host, registry=self.metrics.registry)
            self.metrics_port = self._metrics_http.server_port
        self.models.start_watching(cfg.watch_interval_seconds)
        # Every hosted service answers gRPC health by name (container healthchecks ask for each).
        for name in ("", TE_SERVICE_NAME, *(s.name for s in self.services)):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        model = self.models.current
        log.warning("tellm inference serving on %s:%d (%s; model %s on %s; metrics %s)", cfg.host, port,
                    cfg.security.describe(), model.version, model.provider,
                    f"port {self.metrics_port}" if self.metrics_port else "off")
        return port

    def stop(self, grace_seconds: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish (up to the grace period), release everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_seconds if grace_seconds is None else grace_seconds
        self.health.enter_graceful_shutdown()  # every service NOT_SERVING from now on
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self.servicer is not None:  # a build inside ONNX Runtime must end before the process does
            self.servicer.close(wait_seconds=BUILD_STOP_SECONDS)
        self.models.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        log.warning("tellm inference stopped")

    def wait(self) -> None:
        if self._grpc is not None:
            self._grpc.wait_for_termination()


def serve(server: InferenceServer, ready=None) -> int:
    """Start ``server`` and run until SIGTERM/SIGINT; returns the exit status."""
    config = server.config
    server.start()
    done = threading.Event()

    def on_signal(signum, frame):
        log.warning("signal %s: shutting down (grace %.1f s)", signal.Signals(signum).name, config.grace_seconds)
        done.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ready is not None:
            ready(server)
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
