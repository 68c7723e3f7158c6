from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetPolicyRequest(_message.Message):
    __slots__ = ("topology_id", "policy_name", "params", "reason", "actor")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TOPOLOGY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    topology_id: str
    policy_name: str
    params: _containers.ScalarMap[str, float]
    reason: str
    actor: str
    def __init__(self, topology_id: _Optional[str] = ..., policy_name: _Optional[str] = ..., params: _Optional[_Mapping[str, float]] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class AppliedPolicy(_message.Message):
    __slots__ = ("topology_id", "policy_name", "params", "policy_vector", "version", "applied_at_unix_seconds", "reason", "actor", "inherited_default")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TOPOLOGY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    INHERITED_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    topology_id: str
    policy_name: str
    params: _containers.ScalarMap[str, float]
    policy_vector: _containers.RepeatedScalarFieldContainer[float]
    version: int
    applied_at_unix_seconds: float
    reason: str
    actor: str
    inherited_default: bool
    def __init__(self, topology_id: _Optional[str] = ..., policy_name: _Optional[str] = ..., params: _Optional[_Mapping[str, float]] = ..., policy_vector: _Optional[_Iterable[float]] = ..., version: _Optional[int] = ..., applied_at_unix_seconds: _Optional[float] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., inherited_default: _Optional[bool] = ...) -> None: ...

class SetPolicyResponse(_message.Message):
    __slots__ = ("policy", "previous")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    policy: AppliedPolicy
    previous: AppliedPolicy
    def __init__(self, policy: _Optional[_Union[AppliedPolicy, _Mapping]] = ..., previous: _Optional[_Union[AppliedPolicy, _Mapping]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("topology_id",)
    TOPOLOGY_ID_FIELD_NUMBER: _ClassVar[int]
    topology_id: str
    def __init__(self, topology_id: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: AppliedPolicy
    def __init__(self, policy: _Optional[_Union[AppliedPolicy, _Mapping]] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ParamBounds(_message.Message):
    __slots__ = ("name", "min", "max", "default", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    min: float
    max: float
    default: float
    description: str
    def __init__(self, name: _Optional[str] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., default: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class PolicyDescription(_message.Message):
    __slots__ = ("name", "description", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    params: _containers.RepeatedCompositeFieldContainer[ParamBounds]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., params: _Optional[_Iterable[_Union[ParamBounds, _Mapping]]] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyDescription]
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyDescription, _Mapping]]] = ...) -> None: ...
