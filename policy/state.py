"""Where the policy daemon reads network state: the controller's HTTP API or Prometheus.

Both sources produce the same ``NetworkState``; the daemon keeps a bounded MLU history from
successive reads. Only the controller source carries a traffic matrix and a topology, which
what-if evaluation needs; Prometheus gives MLU and link utilisation only.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class StateError(RuntimeError):
    """The state source could not be read or returned something unusable (the message says what)."""


@dataclass(frozen=True)
class NetworkState:
    time_unix_seconds: float
    mlu: float
    link_utilization: dict[str, float] = field(default_factory=dict)
    traffic_matrix_bps: np.ndarray | None = None  # [N, N]
    topology: dict | None = None  # the controller's /state "topology" object
    router: str | None = None
    predicted_mlu: float | None = None
    source: str = ""

    def summary(self, top_links: int = 5) -> dict:
        """Compact JSON for an LLM or the audit log (no full TM: it can be large)."""
        hot = sorted(self.link_utilization.items(), key=lambda kv: -kv[1])[:top_links]
        doc = {"time_unix_seconds": self.time_unix_seconds, "mlu": self.mlu, "router": self.router,
               "predicted_mlu": self.predicted_mlu, "source": self.source,
               "hottest_links": [{"link": k, "utilization": v} for k, v in hot],
               "num_links": len(self.link_utilization)}
        if self.traffic_matrix_bps is not None:
            tm = self.traffic_matrix_bps
            doc["traffic_matrix_total_bps"] = float(tm.sum())
            doc["num_active_pairs"] = int(np.count_nonzero(tm))
        if self.topology is not None:
            doc["topology"] = {"name": self.topology.get("name"), "num_nodes": len(self.topology.get("nodes", [])),
                               "num_links": len(self.topology.get("links", []))}
        return doc


def _finite(x, what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise StateError(f"{what} is not a number: {x!r}") from None
    if not math.isfinite(v) or v < 0:
        raise StateError(f"{what} must be finite and >= 0, got {v!r}")
    return v


def parse_controller_state(doc: dict, source: str = "controller") -> NetworkState:
    """A controller ``GET /state`` document -> NetworkState (validated)."""
    if not isinstance(doc, dict) or "mlu" not in doc:
        raise StateError("controller state has no 'mlu' field")
    tm = doc.get("traffic_matrix_bps")
    tm_arr = None
    if tm is not None:
        tm_arr = np.asarray(tm, dtype=np.float64)
        if tm_arr.ndim != 2 or tm_arr.shape[0] != tm_arr.shape[1] or not np.all(np.isfinite(tm_arr)):
            raise StateError("controller state 'traffic_matrix_bps' is not a finite square matrix")
    util = {str(k): _finite(v, f"link_utilization[{k}]") for k, v in (doc.get("link_utilization") or {}).items()}
    pm = doc.get("predicted_mlu")
    return NetworkState(time_unix_seconds=float(doc.get("time") or time.time()), mlu=_finite(doc["mlu"], "mlu"),
                        link_utilization=util, traffic_matrix_bps=tm_arr, topology=doc.get("topology"),
                        router=doc.get("router"), predicted_mlu=None if pm is None else float(pm), source=source)


class StateSource(Protocol):
    def read(self) -> NetworkState: ...


def _get_json(url: str, timeout_seconds: float) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as r:
            return json.loads(r.read().decode())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise StateError(f"cannot read {url}: {exc}") from None
    except ValueError as exc:
        raise StateError(f"{url} did not return JSON: {exc}") from None


class ControllerStateSource:
    """``GET <url>`` on the controller's API (default http://127.0.0.1:9100/state)."""

    def __init__(self, url: str = "http://127.0.0.1:9100/state", timeout_seconds: float = 2.0):
        self.url = url
        self.timeout_seconds = timeout_seconds

    def read(self) -> NetworkState:
        return parse_controller_state(_get_json(self.url, self.timeout_seconds), source=self.url)


class PrometheusStateSource:
    """Instant queries on Prometheus' HTTP API: ``tellm_mlu_ratio`` and ``tellm_link_utilization_ratio``."""

    def __init__(self, url: str = "http://127.0.0.1:9090", timeout_seconds: float = 2.0,
                 mlu_query: str = "max(tellm_mlu_ratio)", link_query: str = "tellm_link_utilization_ratio"):
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.mlu_query = mlu_query
        self.link_query = link_query

    def _query(self, q: str) -> list[dict]:
        doc = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": q}), self.timeout_seconds)
        if doc.get("status") != "success":
            raise StateError(f"Prometheus query {q!r} failed: {doc.get('error', doc)}")
        return doc.get("data", {}).get("result", [])

    def read(self) -> NetworkState:
        res = self._query(self.mlu_query)
        if not res:
            raise StateError(f"Prometheus has no sample for {self.mlu_query!r} (is the controller scraped?)")
        ts, mlu = res[0]["value"]
        util = {r["metric"].get("link", str(i)): _finite(r["value"][1], "link utilisation")
                for i, r in enumerate(self._query(self.link_query))}
        return NetworkState(time_unix_seconds=float(ts), mlu=_finite(mlu, "tellm_mlu_ratio"),
                            link_utilization=util, source=self.url)

    def mlu_history(self, window_seconds: float, step_seconds: float = 1.0) -> list[tuple[float, float]]:
        end = time.time()
        q = urllib.parse.urlencode({"query": self.mlu_query, "start": end - window_seconds, "end": end,
                                    "step": step_seconds})
        doc = _get_json(f"{self.url}/api/v1/query_range?{q}", self.timeout_seconds)
        res = doc.get("data", {}).get("result", [])
        return [(float(t), float(v)) for t, v in res[0]["values"]] if res else []


class RecordedStateSource:
    """Replays recorded controller /state snapshots (tests, offline what-if); the last one repeats."""

    def __init__(self, snapshots: list[dict]):
        if not snapshots:
            raise StateError("no recorded snapshots")
        self.snapshots = snapshots
        self.i = 0

    def read(self) -> NetworkState:
        doc = self.snapshots[min(self.i, len(self.snapshots) - 1)]
        self.i += 1
        return parse_controller_state(doc, source="recorded")


class MluHistory:
    """Bounded (time, MLU) history of successive reads."""

    def __init__(self, maxlen: int = 600):
        self._d: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def add(self, state: NetworkState) -> None:
        self._d.append((state.time_unix_seconds, state.mlu))

    def values(self, last: int | None = None) -> np.ndarray:
        v = np.array([m for _, m in self._d], dtype=np.float64)
        return v[-last:] if last else v

    def items(self, last: int | None = None) -> list[tuple[float, float]]:
        it = list(self._d)
        return it[-last:] if last else it

    def stats(self, last: int | None = None) -> dict:
        v = self.values(last)
        if v.size == 0:
            return {"count": 0}
        return {"count": int(v.size), "min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()),
                "median": float(np.median(v)), "std": float(v.std()), "last": float(v[-1])}

    def __len__(self) -> int:
        return len(self._d)
