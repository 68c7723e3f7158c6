from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Link(_message.Message):
    __slots__ = ("src_node", "dst_node", "capacity_bps", "latency_seconds")
    SRC_NODE_FIELD_NUMBER: _ClassVar[int]
    DST_NODE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BPS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    src_node: int
    dst_node: int
    capacity_bps: float
    latency_seconds: float
    def __init__(self, src_node: _Optional[int] = ..., dst_node: _Optional[int] = ..., capacity_bps: _Optional[float] = ..., latency_seconds: _Optional[float] = ...) -> None: ...

class CandidatePaths(_message.Message):
    __slots__ = ("pair_src_nodes", "pair_dst_nodes", "pair_path_counts", "path_link_counts", "path_link_ids")
    PAIR_SRC_NODES_FIELD_NUMBER: _ClassVar[int]
    PAIR_DST_NODES_FIELD_NUMBER: _ClassVar[int]
    PAIR_PATH_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PATH_LINK_COUNTS_FIELD_NUMBER: _ClassVar[int]
    PATH_LINK_IDS_FIELD_NUMBER: _ClassVar[int]
    pair_src_nodes: _containers.RepeatedScalarFieldContainer[int]
    pair_dst_nodes: _containers.RepeatedScalarFieldContainer[int]
    pair_path_counts: _containers.RepeatedScalarFieldContainer[int]
    path_link_counts: _containers.RepeatedScalarFieldContainer[int]
    path_link_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, pair_src_nodes: _Optional[_Iterable[int]] = ..., pair_dst_nodes: _Optional[_Iterable[int]] = ..., pair_path_counts: _Optional[_Iterable[int]] = ..., path_link_counts: _Optional[_Iterable[int]] = ..., path_link_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RegisterTopologyRequest(_message.Message):
    __slots__ = ("topology_id", "name", "node_names", "links", "paths")
    TOPOLOGY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_NAMES_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    topology_id: str
    name: str
    node_names: _containers.RepeatedScalarFieldContainer[str]
    links: _containers.RepeatedCompositeFieldContainer[Link]
    paths: CandidatePaths
    def __init__(self, topology_id: _Optional[str] = ..., name: _Optional[str] = ..., node_names: _Optional[_Iterable[str]] = ..., links: _Optional[_Iterable[_Union[Link, _Mapping]]] = ..., paths: _Optional[_Union[CandidatePaths, _Mapping]] = ...) -> None: ...

class RegisterTopologyResponse(_message.Message):
    __slots__ = ("topology_id", "version", "changed", "num_nodes", "num_links", "num_pairs", "num_paths", "content_hash", "server_seconds")
    TOPOLOGY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    NUM_LINKS_FIELD_NUMBER: _ClassVar[int]
    NUM_PAIRS_FIELD_NUMBER: _ClassVar[int]
    NUM_PATHS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    SERVER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    topology_id: str
    version: int
    changed: bool
    num_nodes: int
    num_links: int
    num_pairs: int
    num_paths: int
    content_hash: str
    server_seconds: float
    def __init__(self, topology_id: _Optional[str] = ..., version: _Optional[int] = ..., changed: _Optional[bool] = ..., num_nodes: _Optional[int] = ..., num_links: _Optional[int] = ..., num_pairs: _Optional[int] = ..., num_paths: _Optional[int] = ..., content_hash: _Optional[str] = ..., server_seconds: _Optional[float] = ...) -> None: ...

class LinkState(_message.Message):
    __slots__ = ("link_up", "link_utilization")
    LINK_UP_FIELD_NUMBER: _ClassVar[int]
    LINK_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    link_up: _containers.RepeatedScalarFieldContainer[bool]
    link_utilization: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, link_up: _Optional[_Iterable[bool]] = ..., link_utilization: _Optional[_Iterable[float]] = ...) -> None: ...

class PolicyVector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("topology_id", "topology_version", "demand_bps", "link_state", "policy_name", "policy_vector")
    TOPOLOGY_ID_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEMAND_BPS_FIELD_NUMBER: _ClassVar[int]
    LINK_STATE_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    topology_id: str
    topology_version: int
    demand_bps: _containers.RepeatedScalarFieldContainer[float]
    link_state: LinkState
    policy_name: str
    policy_vector: PolicyVector
    def __init__(self, topology_id: _Optional[str] = ..., topology_version: _Optional[int] = ..., demand_bps: _Optional[_Iterable[float]] = ..., link_state: _Optional[_Union[LinkState, _Mapping]] = ..., policy_name: _Optional[str] = ..., policy_vector: _Optional[_Union[PolicyVector, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_seconds", "model_seconds", "encode_seconds", "total_seconds", "queue_seconds")
    DECODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    decode_seconds: float
    model_seconds: float
    encode_seconds: float
    total_seconds: float
    queue_seconds: float
    def __init__(self, decode_seconds: _Optional[float] = ..., model_seconds: _Optional[float] = ..., encode_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ..., queue_seconds: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("split", "link_load_bps", "mlu", "model_version", "topology_version", "timings", "observed_mlu")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    LINK_LOAD_BPS_FIELD_NUMBER: _ClassVar[int]
    MLU_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_MLU_FIELD_NUMBER: _ClassVar[int]
    split: _containers.RepeatedScalarFieldContainer[float]
    link_load_bps: _containers.RepeatedScalarFieldContainer[float]
    mlu: float
    model_version: str
    topology_version: int
    timings: Timings
    observed_mlu: float
    def __init__(self, split: _Optional[_Iterable[float]] = ..., link_load_bps: _Optional[_Iterable[float]] = ..., mlu: _Optional[float] = ..., model_version: _Optional[str] = ..., topology_version: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., observed_mlu: _Optional[float] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "type", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    shape: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., shape: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("version", "path", "sha256", "provider", "available_providers", "loaded_at_unix_seconds", "policy_dim", "policy_names", "card_json", "inputs", "outputs", "load_count")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_DIM_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAMES_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LOAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    version: str
    path: str
    sha256: str
    provider: str
    available_providers: _containers.RepeatedScalarFieldContainer[str]
    loaded_at_unix_seconds: float
    policy_dim: int
    policy_names: _containers.RepeatedScalarFieldContainer[str]
    card_json: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    load_count: int
    def __init__(self, version: _Optional[str] = ..., path: _Optional[str] = ..., sha256: _Optional[str] = ..., provider: _Optional[str] = ..., available_providers: _Optional[_Iterable[str]] = ..., loaded_at_unix_seconds: _Optional[float] = ..., policy_dim: _Optional[int] = ..., policy_names: _Optional[_Iterable[str]] = ..., card_json: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., load_count: _Optional[int] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("model_path",)
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    model_path: str
    def __init__(self, model_path: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("model", "changed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    changed: bool
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...
