"""How well one demo phase's control loop held: loads realised against the controller's prediction,
interval timing and OpenFlow messages per interval, routing latency and age, all-pairs reachability.
Pure: reads samples and the controller's ``GET /state``; no Mininet."""

from __future__ import annotations

import numpy as np

#: Seconds after an event (burst, link down/up) whose samples the realisation figures leave out: the
#: controller has not seen the new traffic or routed it yet.
EVENT_SETTLE_SECONDS = 3.0
#: Shortest run of steady seconds averaged into one realisation window.
WINDOW_MIN_SECONDS = 5


def link_loads_pair(measured_util: np.ndarray, link_names: list[str], link_up: np.ndarray,
                    state: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(measured, predicted) utilisation of every link, NaN where the link is down; the prediction is
    the controller's for its installed split (``predicted_link_utilization``); None without one."""
    pred = state.get("predicted_link_utilization") or {}
    if not pred:
        return None
    up = np.asarray(link_up, dtype=bool)
    want = np.array([pred.get(n, np.nan) for n in link_names], dtype=np.float64)
    got = np.asarray(measured_util, dtype=np.float64).copy()
    want[~up], got[~up] = np.nan, np.nan
    return got, want


def _mean_up(x: np.ndarray) -> np.ndarray:
    """Per-column mean over the finite rows (NaN where a link was down the whole time)."""
    n = np.isfinite(x).sum(axis=0)
    return np.where(n > 0, np.nansum(x, axis=0) / np.maximum(n, 1), np.nan)


def _windows(seconds: list[int]) -> list[list[int]]:
    """Runs of consecutive seconds."""
    out: list[list[int]] = []
    for t in sorted(seconds):
        if out and t - out[-1][-1] <= 1:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def _pct(xs, q) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.percentile(xs, q)) if xs else None


def loop_summary(samples, loads: dict[int, tuple[np.ndarray, np.ndarray]], events, warmup_seconds: float,
                 intervals: dict | None, ping: dict | None) -> dict:
    """The phase's loop figures. ``loads``: per sample second, link_loads_pair's arrays; ``intervals``:
    the controller's ``GET /state`` ``intervals`` at the end; ``ping``: {reached, pairs}.

    Realisation is reported two ways, over the steady seconds (after warm-up, not within
    EVENT_SETTLE_SECONDS of an event): per second (each second's measured load against the prediction
    published then; includes counter noise of one second and the offset between the two windows), and
    per steady window of at least WINDOW_MIN_SECONDS (each link's mean measured load against its mean
    prediction over the window)."""
    event_times = [e.at_seconds for e in events] + [getattr(e, "until_seconds", None) or -1e9 for e in events]
    steady = [t for t in loads if t > warmup_seconds
              and not any(0 <= t - et <= EVENT_SETTLE_SECONDS for et in event_times)]
    per_second = [np.abs(loads[t][0] - loads[t][1]) for t in steady]
    flat = np.concatenate(per_second) if per_second else np.zeros(0)
    flat = flat[np.isfinite(flat)]
    windowed = []
    for w in _windows(steady):
        if len(w) >= WINDOW_MIN_SECONDS:
            d = np.abs(_mean_up(np.stack([loads[t][0] for t in w])) - _mean_up(np.stack([loads[t][1] for t in w])))
            windowed.append(d[np.isfinite(d)])
    wflat = np.concatenate(windowed) if windowed else np.zeros(0)
    iv = intervals or {}
    period, work, msgs = iv.get("period_seconds", []), iv.get("work_seconds", []), iv.get("messages", [])
    routed = [s for s in samples if s.router]
    return {
        "realisation": {"samples": len(steady), "link_readings": int(flat.size),
                        "max": float(flat.max()) if flat.size else None,
                        "p95": float(np.percentile(flat, 95)) if flat.size else None,
                        "p50": float(np.percentile(flat, 50)) if flat.size else None,
                        "windows": len(windowed), "window_link_readings": int(wflat.size),
                        "window_max": float(wflat.max()) if wflat.size else None,
                        "window_p95": float(np.percentile(wflat, 95)) if wflat.size else None,
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
