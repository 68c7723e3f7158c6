"""The rule-based decision engine (no LLM): picks a policy from the recent MLU level and burstiness.

- MLU at or above ``high_mlu`` (last sample): ``min_mlu`` — every bit of capacity goes to balancing load.
- MLU bursty (coefficient of variation over the window >= ``burst_cv``): ``headroom`` with
  ``headroom_fraction`` — spread large pairs so that a burst of any one of them still fits.
- Mean MLU at or below ``low_mlu`` and calm: ``latency_aware`` with ``latency_weight`` — spare capacity
  is spent on shorter paths (streaming, interactive traffic).
- Otherwise: keep the active policy (hysteresis band between the thresholds).

Before applying anything but ``min_mlu`` the engine runs the what-if (evaluate_policy) on the
current TM when the state source has one, and keeps the active policy if the candidate's predicted
MLU would reach ``high_mlu``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tellm.contract.policies import Policy, make_policy

from .guard import ActionRejected
from .tools import PolicyTools, ToolError


@dataclass(frozen=True)
class RuleConfig:
    high_mlu: float = 0.8
    low_mlu: float = 0.5
    burst_cv: float = 0.2
    window_samples: int = 30
    min_samples: int = 5
    headroom_fraction: float = 0.2
    latency_weight: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.low_mlu < self.high_mlu:
            raise ValueError("rules need 0 < low_mlu < high_mlu")
        if self.min_samples < 1 or self.window_samples < self.min_samples:
            raise ValueError("rules need 1 <= min_samples <= window_samples")
        make_policy("headroom", {"fraction": self.headroom_fraction})  # bounds checked in one place
        make_policy("latency_aware", {"weight": self.latency_weight})


@dataclass(frozen=True)
class RuleDecision:
    policy: Policy | None  # None = keep the active one
    reason: str


def decide(stats: dict, config: RuleConfig = RuleConfig()) -> RuleDecision:
    """Pure rule: MLU statistics of the recent window (MluHistory.stats) -> decision."""
    n = stats.get("count", 0)
    if n < config.min_samples:
        return RuleDecision(None, f"only {n} MLU samples (need {config.min_samples}); keeping the active policy")
    last, mean, std = stats["last"], stats["mean"], stats["std"]
    cv = std / mean if mean > 0 else 0.0
    if last >= config.high_mlu:
        return RuleDecision(make_policy("min_mlu"),
                            f"MLU {last:.2f} >= {config.high_mlu:.2f}: congestion, balance load with every link")
    if cv >= config.burst_cv:
        return RuleDecision(make_policy("headroom", {"fraction": config.headroom_fraction}),
                            f"bursty load: MLU coefficient of variation {cv:.2f} >= {config.burst_cv:.2f} over "
                            f"{n} samples; keep room on every link for any pair to surge by {config.headroom_fraction:.0%}")
    if mean <= config.low_mlu:
        return RuleDecision(make_policy("latency_aware", {"weight": config.latency_weight}),
                            f"calm, light load: mean MLU {mean:.2f} <= {config.low_mlu:.2f} (cv {cv:.2f}); "
                            f"spend spare capacity on shorter paths")
    return RuleDecision(None, f"MLU {last:.2f} (mean {mean:.2f}, cv {cv:.2f}) inside the band; keeping the active policy")


class RuleEngine:
    name = "rules"

    def __init__(self, config: RuleConfig = RuleConfig()):
        self.config = config

    def decide(self, tools: PolicyTools) -> dict:
        d = decide(tools.history.stats(self.config.window_samples), self.config)
        if d.policy is None:
            return {"engine": self.name, "action": "none", "reason": d.reason}
        try:
            if tools.actuator.current().policy == d.policy:
                return {"engine": self.name, "action": "none", "reason": d.reason + " (already active)"}
            whatif = None
            if d.policy.name != "min_mlu":
                try:
                    whatif = tools.call("evaluate_policy", {"policy": d.policy.name, "params": dict(d.policy.params)},
                                        engine=self.name, context=d.reason)
                except ToolError as exc:  # no TM (Prometheus source): decide on the rules alone
                    whatif = {"unavailable": str(exc)}
                if whatif.get("mlu") is not None and whatif["mlu"] >= self.config.high_mlu:
                    return {"engine": self.name, "action": "none", "whatif": whatif,
                            "reason": d.reason + f"; but what-if MLU {whatif['mlu']:.2f} >= {self.config.high_mlu:.2f} "
                                                 f"({whatif['evaluated_with']}): keeping the active policy"}
            out = tools.call("apply_policy", {"policy": d.policy.name, "params": dict(d.policy.params),
                                              "reason": d.reason}, engine=self.name)
        except (ToolError, ActionRejected) as exc:
            return {"engine": self.name, "action": "rejected", "reason": d.reason, "error": str(exc)}
        return {"engine": self.name, "action": out["outcome"], "reason": d.reason, "result": out, "whatif": whatif}
