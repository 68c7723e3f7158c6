"""Routers: turn (topology, candidate paths, measured demand, link state) into split ratios.

- ``model``: the learned TE head behind the gRPC inference service (tellm.contract.client);
- ``lp``: the min-MLU LP optimum in-process (tecore.solve_min_mlu), over live paths only;
- ``ecmp``: shortest-path routing, the baseline (tecore.shortest_path_split with down links priced out).
``FallbackRouter`` wraps the model: when it is unreachable, slow or rejects the input, the last good
routing is kept for a while (same link state), then LP (small networks) or ECMP takes over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tecore import PathSet, Topology, link_loads, mlu, shortest_path_split, solve_min_mlu

from .failure import restrict_paths

log = logging.getLogger(__name__)

#: Networks up to this many nodes fall back to the LP (fast enough in-process); larger ones to ECMP.
LP_FALLBACK_MAX_NODES = 60
#: Added to the routing metric of down links so that shortest paths avoid them.
_DOWN_LINK_PENALTY = 1e9


@dataclass(frozen=True)
class RoutingInput:
    topo: Topology
    paths: PathSet
    demand_bps: np.ndarray  # float64 [P], in paths.pairs order
    link_up: np.ndarray  # float64 [L], 1 up / 0 down


@dataclass(frozen=True)
class Routing:
    split: np.ndarray  # float64 [Np]
    router: str  # who produced it (e.g. "model", "lp", "model:last-good")
    predicted_mlu: float  # MLU of this split on the input demand
    seconds: float


class RouterFailure(RuntimeError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Router(Protocol):
    name: str

    def route(self, inp: RoutingInput) -> Routing: ...


def _finish(inp: RoutingInput, split: np.ndarray, name: str, t0: float) -> Routing:
    split = np.asarray(split, dtype=np.float64)
    if split.shape != (inp.paths.num_paths,) or not np.all(np.isfinite(split)) or np.any(split < 0):
        raise RouterFailure("invalid", f"router {name} returned an invalid split (shape {split.shape})")
    predicted = mlu(inp.topo, link_loads(inp.paths, split, inp.demand_bps))
    return Routing(split, name, predicted, time.perf_counter() - t0)


class ECMPRouter:
    name = "ecmp"

    def route(self, inp: RoutingInput) -> Routing:
        t0 = time.perf_counter()
        metric = inp.topo.weight + _DOWN_LINK_PENALTY * (np.asarray(inp.link_up) <= 0.5)
        return _finish(inp, shortest_path_split(inp.topo, inp.paths, metric), self.name, t0)


class LPRouter:
    name = "lp"

    def __init__(self, time_limit_seconds: float | None = 5.0):
        self.time_limit_seconds = time_limit_seconds

    def route(self, inp: RoutingInput) -> Routing:
        t0 = time.perf_counter()
        sub = restrict_paths(inp.paths, inp.link_up)
        try:
            res = solve_min_mlu(inp.topo, sub.paths, inp.demand_bps, time_limit_seconds=self.time_limit_seconds)
        except Exception as exc:  # HiGHS status or numerical trouble: the caller falls back
            raise RouterFailure("lp_error", f"LP failed: {exc}") from exc
        return _finish(inp, sub.expand(res.split, inp.paths.num_paths), self.name, t0)


class ModelRouter:
    """The inference service. The client is imported lazily (grpc stays out of pure-logic imports)."""

    name = "model"

    def __init__(self, address: str, timeout_seconds: float = 1.0, retries: int = 1,
                 on_request: Callable[[float], None] | None = None, client=None, security=None):
        self.address = address
        self.security = security  # tellm.contract.security.settings.ClientSecurity (TLS, token); None: plaintext
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.on_request = on_request  # client-side request duration (metrics)
        self._client = client
        self._handle = None
        #: What the handle was registered for: (topology hash, the PathSet object). The path set
        #: changes without the topology when repair paths come and go; it is re-registered then.
        self._handle_key: tuple[str, PathSet] | None = None

    def _get_client(self):
        if self._client is None:
            try:
                from tellm.contract.client import InferenceClient
            except ImportError as exc:
                raise RouterFailure("unavailable", f"inference client not installed: {exc}") from exc
            kw = {"security": self.security} if self.security is not None else {}
            self._client = InferenceClient(self.address, timeout_seconds=self.timeout_seconds, retries=self.retries,
                                           **kw)
        return self._client

    def route(self, inp: RoutingInput) -> Routing:
        t0 = time.perf_counter()
        client = self._get_client()
        try:
            key = self._handle_key
            if self._handle is None or key is None or key[0] != inp.topo.content_hash or key[1] is not inp.paths:
                self._handle = client.register_topology(inp.topo, inp.paths)
                self._handle_key = (inp.topo.content_hash, inp.paths)
            reply = client.route(self._handle, np.asarray(inp.demand_bps, dtype=np.float64),
                                 link_up=np.asarray(inp.link_up, dtype=np.float64))
        except Exception as exc:
            kind = type(exc).__name__
            reason = {"InferenceUnavailable": "unavailable", "InferenceRejected": "rejected"}.get(kind, "error")
            if reason != "rejected":
                self._handle = None  # the server may have restarted and lost the registration
            raise RouterFailure(reason, f"inference service: {kind}: {exc}") from exc
        finally:
            if self.on_request is not None:
                self.on_request(time.perf_counter() - t0)
        return _finish(inp, reply.split, self.name, t0)


class FallbackRouter:
    """Primary router with the fallback chain; ``on_fallback(reason)`` counts each fallback."""

    def __init__(self, primary: Router, num_nodes: int | None, keep_last_seconds: float = 5.0,
                 slow_seconds: float | None = None, on_fallback: Callable[[str], None] | None = None):
        self.primary = primary
        self.name = primary.name
        self.last_resort = ECMPRouter()
        self._lp = LPRouter()
        #: None: chosen per routing input (a discovered topology's size is not known in advance)
        self.secondary: Router | None = None if num_nodes is None else self._secondary_for(num_nodes)
        self.keep_last_seconds = keep_last_seconds
        self.slow_seconds = slow_seconds
        self.on_fallback = on_fallback
        #: (time, link state, path set, routing): reused only for the same link state and path set
        self._last_good: tuple[float, np.ndarray, PathSet, Routing] | None = None
        self._mode: str | None = None  # how the last interval was routed (for log de-duplication)

    def _secondary_for(self, num_nodes: int) -> Router:
        return self._lp if num_nodes <= LP_FALLBACK_MAX_NODES else self.last_resort

    def _say(self, mode: str, fmt: str, *args) -> None:
        if mode != self._mode and not (self._mode is None and mode == self.primary.name):
            log.warning(fmt, *args)
        else:
            log.debug(fmt, *args)
        self._mode = mode

    def _count(self, reason: str) -> None:
        if self.on_fallback is not None:
            self.on_fallback(reason)

    def route(self, inp: RoutingInput) -> Routing:
        try:
            r = self.primary.route(inp)
            if self.slow_seconds is not None and r.seconds > self.slow_seconds:
                # Still usable (it is the answer for this TM), but say so: the loop ran late.
                log.warning("router %s took %.3f s (> %.3f s)", self.primary.name, r.seconds, self.slow_seconds)
                self._count("slow")
            self._last_good = (time.monotonic(), np.asarray(inp.link_up).copy(), inp.paths, r)
            self._say(self.primary.name, "router %s answers again", self.primary.name)
            return r
        except RouterFailure as exc:
            reason, message = exc.reason, str(exc)
        self._count(reason)
        # Warn when the way we route changes; repeats of the same fallback go to debug (one per interval).
        if self._last_good is not None:
            when, link_up, paths, r = self._last_good
            if (time.monotonic() - when <= self.keep_last_seconds and np.array_equal(link_up, inp.link_up)
                    and paths is inp.paths):
                self._say("last-good", "%s; keeping the last good routing from %.1f s ago", message,
                          time.monotonic() - when)
                return Routing(r.split, f"{r.router}:last-good",
                               mlu(inp.topo, link_loads(inp.paths, r.split, inp.demand_bps)), 0.0)
        secondary = self.secondary or self._secondary_for(inp.topo.num_nodes)
        self._say(secondary.name, "%s; falling back to %s", message, secondary.name)
        try:
            return secondary.route(inp)
        except RouterFailure as exc2:
            self._count(exc2.reason)
            log.warning("%s; falling back to %s", exc2, self.last_resort.name)
            return self.last_resort.route(inp)


def make_router(name: str, num_nodes: int | None, inference_address: str = "127.0.0.1:50051",
                inference_timeout_seconds: float = 1.0, on_request=None, on_fallback=None,
                inference_security=None) -> Router:
    if name == "ecmp":
        return ECMPRouter()
    if name == "lp":
        return LPRouterWithFallback(on_fallback)
    if name == "model":
        model = ModelRouter(inference_address, timeout_seconds=inference_timeout_seconds, on_request=on_request,
                            security=inference_security)
        return FallbackRouter(model, num_nodes, on_fallback=on_fallback)
    raise ValueError(f"unknown router {name!r} (model, lp, ecmp)")


class LPRouterWithFallback:
    """``--router lp``: the LP, with ECMP when HiGHS fails (counted like any fallback)."""

    name = "lp"

    def __init__(self, on_fallback=None):
        self.lp = LPRouter()
        self.ecmp = ECMPRouter()
        self.on_fallback = on_fallback

    def route(self, inp: RoutingInput) -> Routing:
        try:
            return self.lp.route(inp)
        except RouterFailure as exc:
            if self.on_fallback is not None:
                self.on_fallback(exc.reason)
            log.warning("%s; falling back to ecmp", exc)
            return self.ecmp.route(inp)
