"""Prometheus metrics of the inference service, on a registry of their own (several servers can
live in one process, as in the tests)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From 0.5 ms (Abilene on CPU) to 10 s (Kdl registration).
LATENCY_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                           0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(eq=False)
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _head_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("tellm_inference_requests", "RPCs handled, by method and gRPC status code",
                                ["method", "code"], registry=r)
        self.duration = Histogram("tellm_inference_request_duration_seconds",
                                  "Server-side handling time of an RPC in seconds", ["method"],
                                  buckets=LATENCY_BUCKETS_SECONDS, registry=r)
        self.model_info = Gauge("tellm_model_info", "The model being served (value 1)",
                                ["version", "provider", "sha256", "path"], registry=r)
        self.provider_info = Gauge("tellm_inference_provider_info",
                                   "ONNX Runtime execution provider running the model (value 1)", ["provider"],
                                   registry=r)
        self.model_reloads = Counter("tellm_inference_model_reloads", "Model (re)loads by result",
                                     ["result"], registry=r)
        self.model_load_seconds = Gauge("tellm_inference_model_load_seconds",
                                        "Time the current model took to load", registry=r)
        self.topologies = Gauge("tellm_inference_topologies", "Topologies registered", registry=r)
        self.topology_head = Gauge("tellm_inference_topology_head_info",
                                   "Graph serving a registered topology: provider and layout (generic, dense, csr or "
                                   "bucketed; value 1)",
                                   ["topology", "provider", "layout"], registry=r)
        self.topology_head_build_seconds = Gauge("tellm_inference_topology_head_build_seconds",
                                                 "Time the topology's specialised head took to build (0: generic graph)",
                                                 ["topology"], registry=r)
        self.batch_size = Histogram("tellm_inference_batch_size", "Route requests served by one model run",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method=method, code=code).inc()
        self.duration.labels(method=method).observe(seconds)

    def set_topology_head(self, topology: str, head, model=None) -> None:
        """``head`` None: the generic graph of ``model`` serves the topology (nothing was built)."""
        if head is None:
            provider, layout, build_seconds = (model.provider if model is not None else "unknown"), "generic", 0.0
        else:
            provider, layout, build_seconds = head.provider, head.tables.layout, head.build_seconds
        with self._head_lock:  # registrations and background builds both report here
            for labels in [m for m in self.topology_head._metrics if m[0] == topology]:
                self.topology_head.remove(*labels)
            self.topology_head.labels(topology=topology, provider=provider, layout=layout).set(1)
            self.topology_head_build_seconds.labels(topology=topology).set(build_seconds)

    def set_model(self, model) -> None:
        self.model_info.clear()
        self.model_info.labels(version=model.version, provider=model.provider, sha256=model.sha256,
                               path=str(model.path)).set(1)
        self.provider_info.clear()
        self.provider_info.labels(provider=model.provider).set(1)
        self.model_load_seconds.set(model.load_seconds)
