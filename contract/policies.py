"""Policies as data: named TE objectives with bounded parameters, and their policy vectors.

This module is the single place for policy names and parameter bounds; the vector layout it maps
them to (the TE head's ``policy`` input, float32 [POLICY_DIM]) is in ``tellm.contract.vocabulary``:

- ``policy[LATENCY_SLOT]`` = latency penalty weight lambda in [0, 1]   (``latency_aware``)
- ``policy[HEADROOM_SLOT]`` = burst fraction h in [0, 0.5]              (``headroom``: every pair may
  surge by h of its demand; each link keeps room for the surge of the largest pair it carries)
- the other slots are reserved, always 0.

All zeros is plain min-MLU (``min_mlu``). The same objectives are solved exactly by
``tecore.objectives``. Names are spelt with underscores everywhere (model card, Route, GetModelInfo,
PolicyService, the daemon); ``canonical_name`` also accepts the hyphenated spelling on input
(``min-mlu``). Torch-free and gRPC-free: the daemon, the servicers, the MCP server and the LP all
import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .vocabulary import HEADROOM_SLOT, LATENCY_SLOT, POLICY_DIM


class PolicyError(ValueError):
    """An unknown policy name or a parameter outside its bounds (the message says which)."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    minimum: float
    maximum: float
    default: float
    description: str
    slot: int  # index in the policy vector

    def validate(self, policy: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PolicyError(f"policy {policy!r}: parameter {self.name!r} must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v) or not self.minimum <= v <= self.maximum:
            raise PolicyError(f"policy {policy!r}: parameter {self.name!r} = {value!r} is outside "
                              f"[{self.minimum:g}, {self.maximum:g}]")
        return v


@dataclass(frozen=True)
class PolicySpec:
    name: str
    description: str
    params: tuple[ParamSpec, ...] = ()

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise PolicyError(f"policy {self.name!r} has no parameter {name!r} "
                          f"(its parameters: {', '.join(p.name for p in self.params) or 'none'})")

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "params": [{"name": p.name, "min": p.minimum, "max": p.maximum, "default": p.default,
                            "description": p.description} for p in self.params]}


POLICIES: dict[str, PolicySpec] = {s.name: s for s in (
    PolicySpec("min_mlu", "Minimise the maximum link utilisation (plain load balancing; the default)."),
    PolicySpec("headroom", "Burst headroom: minimise the utilisation each link would reach if its largest "
               "pair surged by `fraction` of its demand. Spreads large pairs over more paths so one burst "
               "lands on several links; reports whether any single burst still fits.",
               (ParamSpec("fraction", 0.0, 0.5, 0.2, "surge of a pair, as a share of its demand, that every "
                          "link keeps room for", HEADROOM_SLOT),)),
    PolicySpec("latency_aware", "Minimise MLU + weight * latency stretch (demand-weighted mean path latency "
               "over the demand-weighted mean of each pair's lowest candidate-path latency): trades some "
               "load balance for shorter paths (streaming, interactive traffic).",
               (ParamSpec("weight", 0.0, 1.0, 0.5, "latency penalty weight lambda", LATENCY_SLOT),)),
)}

DEFAULT_POLICY = "min_mlu"


@dataclass(frozen=True)
class Policy:
    """A validated policy: a known name and every one of its parameters within bounds."""

    name: str
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = get_spec(self.name)
        given = dict(self.params or {})
        unknown = sorted(set(given) - {p.name for p in spec.params})
        if unknown:
            raise PolicyError(f"policy {self.name!r} has no parameter {unknown[0]!r} "
                              f"(its parameters: {', '.join(p.name for p in spec.params) or 'none'})")
        clean = {p.name: p.validate(spec.name, given.get(p.name, p.default)) for p in spec.params}
        object.__setattr__(self, "name", spec.name)
        object.__setattr__(self, "params", clean)

    @property
    def spec(self) -> PolicySpec:
        return POLICIES[self.name]

    def to_vector(self) -> np.ndarray:
        vec = np.zeros(POLICY_DIM, dtype=np.float32)
        for p in self.spec.params:
            vec[p.slot] = self.params[p.name]
        return vec

    @property
    def headroom_fraction(self) -> float:
        return float(self.params.get("fraction", 0.0)) if self.name == "headroom" else 0.0

    @property
    def latency_weight(self) -> float:
        return float(self.params.get("weight", 0.0)) if self.name == "latency_aware" else 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "params": dict(self.params)}

    def label(self) -> str:
        """Compact text for metrics and logs, e.g. ``headroom(fraction=0.2)``."""
        inner = ",".join(f"{k}={v:g}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner})" if inner else self.name


def canonical_name(name: str) -> str:
    """The one spelling of a policy name: underscores, so ``min-mlu`` (hyphenated input) is ``min_mlu``."""
    return name.strip().replace("-", "_")


def get_spec(name: Any) -> PolicySpec:
    spec = POLICIES.get(canonical_name(name)) if isinstance(name, str) else None
    if spec is None:
        raise PolicyError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
    return spec


def make_policy(name: Any, params: Mapping[str, Any] | None = None) -> Policy:
    """Build and validate a policy from untrusted input (an RPC, a tool call, a CLI flag)."""
    if params is not None and not isinstance(params, Mapping):
        raise PolicyError(f"policy parameters must be an object of name -> number, got {params!r}")
    return Policy(get_spec(name).name, dict(params or {}))


def policy_from_vector(vec: np.ndarray) -> Policy:
    """Inverse of ``to_vector`` for vectors that set at most one known slot (for display only)."""
    v = np.asarray(vec, dtype=np.float64).reshape(-1)
    if v.shape != (POLICY_DIM,):
        raise PolicyError(f"policy vector must have {POLICY_DIM} values, got {v.shape[0]}")
    if v[LATENCY_SLOT] and v[HEADROOM_SLOT]:
        raise PolicyError("policy vector sets both latency weight and headroom; no named policy matches")
    if v[LATENCY_SLOT]:
        return make_policy("latency_aware", {"weight": float(v[LATENCY_SLOT])})
    if v[HEADROOM_SLOT]:
        return make_policy("headroom", {"fraction": float(v[HEADROOM_SLOT])})
    return make_policy(DEFAULT_POLICY)


def check_policy_vector(vec: np.ndarray) -> None:
    """Refuse a raw policy vector that no policy could produce: a slot outside its parameter's
    bounds, or a reserved slot that is not 0. Raises PolicyError naming the slot."""
    v = np.asarray(vec, dtype=np.float64).reshape(-1)
    if v.shape != (POLICY_DIM,):
        raise PolicyError(f"policy vector must have {POLICY_DIM} values, got {v.shape[0]}")
    bounded = {p.slot: p for spec in POLICIES.values() for p in spec.params}
    for slot, value in enumerate(v.tolist()):
        p = bounded.get(slot)
        if p is None:
            if value != 0:
                raise PolicyError(f"[{slot}] = {value:g}: slot {slot} is reserved and must be 0")
        elif not (math.isfinite(value) and p.minimum <= value <= p.maximum):
            raise PolicyError(f"[{slot}] = {value:g} is outside [{p.minimum:g}, {p.maximum:g}] (slot {slot} is "
                              f"the {p.name!r} parameter)")


def list_policies() -> list[dict]:
    return [s.to_dict() for s in POLICIES.values()]


#: Topology id of the default policy (applies to every topology without its own).
DEFAULT_TOPOLOGY = ""


@dataclass(frozen=True)
class AppliedPolicy:
    """A policy as applied to one topology (PolicyService's AppliedPolicy message)."""

    topology_id: str
    policy: Policy
    version: int = 0
    applied_at_unix_seconds: float = 0.0
    reason: str = ""
    actor: str = ""
    inherited_default: bool = False

    def to_dict(self) -> dict:
        return {"topology_id": self.topology_id, "policy": self.policy.to_dict(), "version": self.version,
                "policy_vector": self.policy.to_vector().tolist(),
                "applied_at_unix_seconds": self.applied_at_unix_seconds, "reason": self.reason,
                "actor": self.actor, "inherited_default": self.inherited_default}
