"""gRPC glue: the tellm.v1.TrafficEngineeringService servicer.

Each handler decodes its request into numpy arrays, calls the pure parts (topologies.py,
model.py) and encodes the reply; every failure becomes a gRPC status with a message naming the
field, counted in the metrics. Nothing a client sends can stop the server: unexpected exceptions
become INTERNAL for that one call.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Callable

import grpc
import numpy as np

from tellm.contract.codec import get_array, set_packed
from tellm.contract.policies import DEFAULT_POLICY, PolicyError, canonical_name, check_policy_vector
from tellm.contract.v1 import traffic_engineering_service_pb2 as pb
from tellm.contract.v1 import traffic_engineering_service_pb2_grpc as pb_grpc
from tellm.contract.vocabulary import POLICY_DIM
from tellm.contract.security.audit import AdminAudit

from .fastpath import RUN_STARTED, FastPath, HeadState
from .errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, RequestError, Unavailable
from .metrics import ServiceMetrics
from .session import LoadedModel, ModelError, ModelHolder, ModelRefused, ReloadBusy
from .topologies import TopologyStore, build_topology
from .validation import check_demand_fits, check_outputs

log = logging.getLogger("tellm.inference.service")

#: The active policy vector for a topology id (float32 [POLICY_DIM]), for Route requests that name none.
PolicyLookup = Callable[[str], np.ndarray]


def _rpc(method: str):
    """Count, time and map errors of one RPC handler."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(self, request, context):
            t0 = time.perf_counter()
            code = "OK"
            try:
                return fn(self, request, context)
            except RequestError as exc:
                code = exc.code
                context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
            except Exception as exc:  # noqa: BLE001 - one bad call must never take the server down
                code = "INTERNAL"
                log.exception("%s failed", method)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(exc).__name__}: {exc}")
            finally:
                self.metrics.observe(method, code, time.perf_counter() - t0)

        return handler

    return wrap


def _finite_nonnegative(field_name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidArgument(f"{field_name}[{i}]", f"must be finite, got {arr[i]} "
                                                    f"({int(bad.sum())} non-finite values)")
    neg = arr < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise InvalidArgument(f"{field_name}[{i}]", f"must be >= 0, got {arr[i]} ({int(neg.sum())} negative values)")


def out_of_time(context) -> bool:
    """The call was cancelled or its deadline passed."""
    return not context.is_active() or (context.time_remaining() or 1.0) <= 0


def model_info_message(model: LoadedModel, graphs: list[pb.TopologyGraph] = ()) -> pb.ModelInfo:
    def spec(t):
        return pb.TensorSpec(name=t.name, type=t.type, shape=list(t.shape))

    return pb.ModelInfo(version=model.version, path=str(model.path), sha256=model.sha256, provider=model.provider,
                        available_providers=list(model.available_providers),
                        loaded_at_unix_seconds=model.loaded_at_unix_seconds, policy_dim=model.policy_dim,
                        policy_names=sorted(model.policies), card_json=model.card_json,
                        inputs=[spec(t) for t in model.inputs], outputs=[spec(t) for t in model.outputs],
                        load_count=model.load_count, topology_graphs=graphs)


class TrafficEngineeringServicer(pb_grpc.TrafficEngineeringServiceServicer):
    def __init__(self, models: ModelHolder, topologies: TopologyStore, metrics: ServiceMetrics,
                 max_parallel_runs: int = 4, policy_lookup: PolicyLookup | None = None,
                 audit: AdminAudit | None = None, fast_path: dict | None = None):
        self.models = models
        self.audit = audit or AdminAudit()
        # The operator's active policy (e.g. set through PolicyService) applies to requests that name none.
        self.policy_lookup = policy_lookup
        self.topologies = topologies
        self.metrics = metrics
        # Bounds memory (a Kdl-size run allocates ~1 GB of intermediates) and CPU oversubscription
        # (each run already uses every core); waiting for a slot still honours the deadline.
        self.run_slots = threading.BoundedSemaphore(max_parallel_runs)
        # Per-topology specialised heads with same-topology batching (fastpath.py); None: generic graph only.
        self.fast = (FastPath(self.run_slots, metrics, is_current=self._serves, **fast_path)
                     if fast_path is not None else None)

    def _serves(self, model, topo, topology_id: str) -> bool:
        """``model`` is the one served and ``topology_id`` is registered with the arrays ``topo``."""
        return model is self.models.current and self.topologies.peek(topology_id) is topo

    def model_changed(self, model: LoadedModel) -> None:
        """A new model serves: the generic graph serves every topology until its specialised head is built."""
        for reg in self.topologies.registered():
            if self.fast is not None:
                self.fast.register(model, reg.arrays, reg.topology_id)
            else:
                self.metrics.set_topology_head(reg.topology_id, None, model)

    def close(self, wait_seconds: float = 0.0) -> None:
        """Stop background work (specialised builds), waiting up to ``wait_seconds`` for a running build."""
        if self.fast is not None:
            self.fast.close(wait_seconds)

    # ---------------------------------------------------------------- RegisterTopology
    @_rpc("RegisterTopology")
    def RegisterTopology(self, request: pb.RegisterTopologyRequest, context) -> pb.RegisterTopologyResponse:
        t0 = time.perf_counter()
        links = request.links
        paths = request.paths
        arrays = build_topology(
            node_names=list(request.node_names),
            link_src=np.fromiter((lk.src_node for lk in links), dtype=np.int64, count=len(links)),
            link_dst=np.fromiter((lk.dst_node for lk in links), dtype=np.int64, count=len(links)),
            capacity_bps=np.fromiter((lk.capacity_bps for lk in links), dtype=np.float64, count=len(links)),
            latency_seconds=np.fromiter((lk.latency_seconds for lk in links), dtype=np.float64, count=len(links)),
            pair_src=get_array(paths, "pair_src_nodes", np.int64),
            pair_dst=get_array(paths, "pair_dst_nodes", np.int64),
            pair_path_counts=get_array(paths, "pair_path_counts", np.int64),
            path_link_counts=get_array(paths, "path_link_counts", np.int64),
            path_link_ids=get_array(paths, "path_link_ids", np.int64),
            name=request.name,
        )
        topology_id = request.topology_id or request.name or arrays.content_hash
        reg, changed = self.topologies.register(topology_id, arrays)
        self.metrics.topologies.set(len(self.topologies))
        model = self.models.current
        if self.fast is not None and model is not None:  # queues the specialised build; returns at once
            self.fast.register(model, reg.arrays, topology_id)
        elif model is not None:
            self.metrics.set_topology_head(topology_id, None, model)  # the generic graph serves it
        if changed:
            log.info("registered topology %r version %d: %d nodes, %d links, %d pairs, %d paths",
                     topology_id, reg.version, arrays.num_nodes, arrays.num_links, arrays.num_pairs, arrays.num_paths)
        return pb.RegisterTopologyResponse(
            topology_id=topology_id, version=reg.version, changed=changed, num_nodes=arrays.num_nodes,
            num_links=arrays.num_links, num_pairs=arrays.num_pairs, num_paths=arrays.num_paths,
            content_hash=arrays.content_hash, server_seconds=time.perf_counter() - t0)

    # ---------------------------------------------------------------- Route
    @_rpc("Route")
    def Route(self, request: pb.RouteRequest, context) -> pb.RouteResponse:
        t0 = time.perf_counter()
        reg = self.topologies.get(request.topology_id, request.topology_version)
        topo = reg.arrays
        model = self.models.current
        if model is None:
            raise Unavailable("no model is loaded")

        demand = get_array(request, "demand_bps", np.float32)
        if demand.shape[0] != topo.num_pairs:
            raise InvalidArgument("demand_bps", f"has {demand.shape[0]} values, the topology has "
                                                f"{topo.num_pairs} pairs (one demand per registered pair)")
        _finite_nonnegative("demand_bps", demand)
        check_demand_fits(demand, topo)

        link_up = reg.all_up
        observed_mlu = None
        if request.HasField("link_state"):
            state = request.link_state
            if len(state.link_up):
                up = get_array(state, "link_up", bool)
                if up.shape[0] != topo.num_links:
                    raise InvalidArgument("link_state.link_up", f"has {up.shape[0]} values, the topology has "
                                                                f"{topo.num_links} links")
                link_up = up.astype(np.float32)
            if len(state.link_utilization):
                util = get_array(state, "link_utilization", np.float32)
                if util.shape[0] != topo.num_links:
                    raise InvalidArgument("link_state.link_utilization", f"has {util.shape[0]} values, the "
                                                                         f"topology has {topo.num_links} links")
                _finite_nonnegative("link_state.link_utilization", util)
                observed_mlu = float((util * link_up).max())

        policy = self._policy(request, model)
        t_decoded = time.perf_counter()

        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the deadline passed before the model ran")
        out = self._run_fast(model, reg, demand, link_up, policy, remaining, context)
        if out is not None:
            t_slot = out.pop(RUN_STARTED)
        else:
            if not self.run_slots.acquire(timeout=remaining):
                raise DeadlineExceeded("the deadline passed while waiting for a free model slot")
            t_slot = time.perf_counter()
            try:
                out = self._run(model, topo, demand, link_up, policy, context)
            finally:
                self.run_slots.release()
            self.metrics.batch_size.observe(1)  # the generic graph runs one request at a time
        t_model = time.perf_counter()

        split = np.asarray(out["split"], dtype=np.float32).reshape(-1)
        loads = np.asarray(out["link_load_bps"], dtype=np.float32).reshape(-1)
        mlu = float(np.asarray(out["mlu"]).reshape(-1)[0])
        check_outputs(model.version, topo, split, loads, mlu)

        reply = pb.RouteResponse(mlu=mlu, model_version=model.version, topology_version=reg.version)
        if observed_mlu is not None:
            reply.observed_mlu = observed_mlu
        set_packed(reply, "split", split)
        set_packed(reply, "link_load_bps", loads)
        t_end = time.perf_counter()
        reply.timings.decode_seconds = t_decoded - t0
        reply.timings.queue_seconds = t_slot - t_decoded
        reply.timings.model_seconds = t_model - t_slot
        reply.timings.encode_seconds = t_end - t_model
        reply.timings.total_seconds = t_end - t0
        return reply

    def _run_fast(self, model, reg, demand, link_up, policy, remaining, context):
        if self.fast is None:
            return None
        import onnxruntime as ort

        run_options = ort.RunOptions()
        context.add_callback(lambda: setattr(run_options, "terminate", True))
        try:
            out = self.fast.route(model, reg, demand, link_up, policy, remaining, run_options)
        except TimeoutError as exc:
            raise DeadlineExceeded(str(exc)) from exc
        except Exception as exc:
            if out_of_time(context):
                raise DeadlineExceeded("the deadline passed while the model ran") from exc
            raise
        if out is not None and out_of_time(context):
            raise DeadlineExceeded("the deadline passed while the model ran")
        return out

    @staticmethod
    def _run(model: LoadedModel, topo, demand, link_up, policy, context) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        run_options = ort.RunOptions()
        # When the call ends early (deadline, cancellation) stop the model run instead of finishing
        # work nobody will read; after a normal reply the flag is set on a finished run (harmless).
        context.add_callback(lambda: setattr(run_options, "terminate", True))
        static = {"capacity_bps": topo.capacity_bps, "latency_seconds": topo.latency_seconds,
                  "path_pair": topo.path_pair, "inc_path": topo.inc_path, "inc_link": topo.inc_link}
        dynamic = {"demand_bps": demand, "link_up": link_up, "policy": policy}
        try:
            return model.run_bound(topo, static, dynamic, run_options)
        except Exception as exc:
            if not context.is_active() or (context.time_remaining() or 1.0) <= 0:
                raise DeadlineExceeded("the deadline passed while the model ran") from exc
            raise

    def _policy(self, request: pb.RouteRequest, model: LoadedModel) -> np.ndarray:
        which = request.WhichOneof("policy")
        if which == "policy_name":
            name = canonical_name(request.policy_name)
            if name not in model.policies:
                raise InvalidArgument("policy_name", f"unknown policy {request.policy_name!r}; this model knows "
                                                     f"{', '.join(sorted(model.policies))}")
            return model.policies[name]
        if which == "policy_vector":
            vec = get_array(request.policy_vector, "values", np.float32)
            if vec.shape[0] != model.policy_dim:
                raise InvalidArgument("policy_vector.values", f"has {vec.shape[0]} values, the model takes "
                                                              f"{model.policy_dim}")
            if not np.isfinite(vec).all():
                raise InvalidArgument("policy_vector.values", "must be finite")
            if model.policy_dim == POLICY_DIM:
                try:
                    check_policy_vector(vec)
                except PolicyError as exc:
                    raise InvalidArgument("policy_vector.values", str(exc)) from None
            return vec
        if self.policy_lookup is not None and model.policy_dim == POLICY_DIM:
            return np.asarray(self.policy_lookup(request.topology_id), dtype=np.float32)
        return model.policies[DEFAULT_POLICY]

    # ---------------------------------------------------------------- model admin
    @_rpc("ReloadModel")
    def ReloadModel(self, request: pb.ReloadModelRequest, context) -> pb.ReloadModelResponse:
        what = {"model_path": request.model_path}
        try:
            model, changed = self.models.reload(request.model_path or None)
        except ReloadBusy as exc:
            self.audit.record(context, "ReloadModel", what, f"busy: {exc}")
            raise Unavailable(f"{exc}; try again") from None
        except ModelRefused as exc:
            self.audit.record(context, "ReloadModel", what, f"refused: {exc}")
            # One answer for every file the server will not read (missing, secret, FIFO, device, too large,
            # outside the model directory): no oracle for what exists on the server. The log says which.
            raise InvalidArgument("model_path", "not an allowed model file: give a regular file inside the "
                                                "server's model directory, within its size limit (the previous "
                                                "model keeps serving)") from None
        except ModelError as exc:
            self.audit.record(context, "ReloadModel", what, f"failed: {exc}")
            if request.model_path:
                raise InvalidArgument("model_path", f"{exc} (the previous model keeps serving)") from exc
            raise FailedPrecondition(f"the model file cannot be served: {exc} (the previous model keeps "
                                     "serving)") from exc
        self.audit.record(context, "ReloadModel", what, f"ok: version {model.version}"
                                                        f"{' (changed)' if changed else ' (unchanged)'}")
        return pb.ReloadModelResponse(model=model_info_message(model, self._graphs(model)), changed=changed)

    @_rpc("GetModelInfo")
    def GetModelInfo(self, request: pb.GetModelInfoRequest, context) -> pb.GetModelInfoResponse:
        model = self.models.current
        if model is None:
            raise Unavailable("no model is loaded")
        return pb.GetModelInfoResponse(model=model_info_message(model, self._graphs(model)))

    def _graphs(self, model: LoadedModel) -> list[pb.TopologyGraph]:
        """Which graph serves each registered topology."""
        out = []
        for reg in self.topologies.registered():
            st = (self.fast.state(model, reg.arrays) if self.fast is not None
                  else HeadState(model.provider, "generic", 0.0, False))
            out.append(pb.TopologyGraph(topology_id=reg.topology_id, topology_version=reg.version,
                                        provider=st.provider, layout=st.layout, build_seconds=st.build_seconds,
                                        building=st.building, mlp_dtype=st.mlp_dtype,
                                        cuda_graph_batches=list(st.cuda_graph_batches)))
        return out
