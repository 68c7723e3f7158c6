"""How well one demo phase's control loop held: loads realised against the controller's prediction,
interval timing and OpenFlow messages per interval, routing latency and age, all-pairs reachability.
Pure: reads samples and the controller's ``GET /state``; no Mininet."""

from __future__ import annotations

import numpy as np

#: Seconds after an event (burst, link down/up) whose samples the realisation figures leave out: the
#: controller has not seen the new traffic or routed it yet.
EVENT_SETTLE_SECONDS = 3.0


def realisation_error(measured_util: np.ndarray, link_names: list[str], link_up: np.ndarray,
                      state: dict) -> np.ndarray | None:
    """|measured - predicted| utilisation of every up link (fractions of capacity), the prediction
    being the controller's for its installed split (``predicted_link_utilization``); None without one."""
    pred = state.get("predicted_link_utilization") or {}
    if not pred:
        return None
    want = np.array([pred.get(n, np.nan) for n in link_names], dtype=np.float64)
    dev = np.abs(np.asarray(measured_util, dtype=np.float64) - want)
    return dev[np.asarray(link_up, dtype=bool) & np.isfinite(dev)]


def _pct(xs, q) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.percentile(xs, q)) if xs else None


def loop_summary(samples, deviations: dict[int, np.ndarray], events, warmup_seconds: float,
                 intervals: dict | None, ping: dict | None) -> dict:
    """The phase's loop figures. ``deviations``: per sample second, realisation_error's array;
    ``intervals``: the controller's ``GET /state`` ``intervals`` at the end; ``ping``: {reached, pairs}."""
    event_times = [e.at_seconds for e in events] + [getattr(e, "until_seconds", None) or -1e9 for e in events]
    steady = [t for t in deviations if t >= warmup_seconds
              and not any(0 <= t - et <= EVENT_SETTLE_SECONDS for et in event_times)]
    flat = np.concatenate([deviations[t] for t in steady]) if steady else np.zeros(0)
    iv = intervals or {}
    period, work, msgs = iv.get("period_seconds", []), iv.get("work_seconds", []), iv.get("messages", [])
    routed = [s for s in samples if s.router]
    return {
        "realisation": {"samples": len(steady), "link_readings": int(flat.size),
                        "max": float(flat.max()) if flat.size else None,
                        "p95": float(np.percentile(flat, 95)) if flat.size else None,
                        "p50": float(np.percentile(flat, 50)) if flat.size else None,
                        "settle_after_event_seconds": EVENT_SETTLE_SECONDS},
        "intervals": {"count": iv.get("count"), "overruns": iv.get("overruns"),
                      "period_p50_seconds": _pct(period, 50), "period_p99_seconds": _pct(period, 99),
                      "period_max_seconds": max(period) if period else None,
                      "work_p50_seconds": _pct(work, 50), "work_p99_seconds": _pct(work, 99),
                      "messages_p50": _pct(msgs, 50), "messages_p99": _pct(msgs, 99),
                      "messages_max": max(msgs) if msgs else None,
                      "messages_after_first_10": int(sum(msgs[10:])) if len(msgs) > 10 else None},
        "routing": {"seconds_p50": _pct([s.routing_seconds for s in routed], 50),
                    "seconds_p99": _pct([s.routing_seconds for s in routed], 99),
                    "age_p50_seconds": _pct([s.routing_age_seconds for s in routed], 50),
                    "age_p99_seconds": _pct([s.routing_age_seconds for s in routed], 99),
                    "routers_seen": sorted({s.router for s in routed})},
        "ping": ping,
    }
