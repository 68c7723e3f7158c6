"""Shared helpers of the policy tests: tiny hand-solvable topologies, a fake clock, recorded states."""

from __future__ import annotations

import numpy as np

from tecore import PathSet, Topology

from . import FIXTURES, ROOT


def triangle(capacity_bps: float = 10.0, latency_seconds: float = 1e-3) -> tuple[Topology, PathSet]:
    """A, B, C fully meshed (both directions); one pair A->B with paths A-B (1 hop) and A-C-B (2 hops)."""
    edges = [(0, 1), (1, 0), (0, 2), (2, 0), (2, 1), (1, 2)]
    topo = Topology(name="triangle", nodes=("A", "B", "C"), src=np.array([e[0] for e in edges]),
                    dst=np.array([e[1] for e in edges]), capacity_bps=np.full(6, capacity_bps),
                    weight=np.ones(6), latency_seconds=np.full(6, latency_seconds))
    paths = PathSet.from_node_paths(topo, {(0, 1): [[0, 1], [0, 2, 1]]})
    return topo, paths


def state_doc(topo: Topology, tm: np.ndarray, mlu: float, t: float, router: str = "model") -> dict:
    """A controller GET /state document (the fields the policy daemon reads)."""
    links = [{"id": i, "name": f"{topo.nodes[topo.src[i]]}->{topo.nodes[topo.dst[i]]}",
              "src": topo.nodes[topo.src[i]], "dst": topo.nodes[topo.dst[i]],
              "capacity_bps": float(topo.capacity_bps[i]), "latency_seconds": float(topo.latency_seconds[i]),
              "port": i + 2, "up": True} for i in range(topo.num_links)]
    return {"topology": {"name": topo.name, "nodes": list(topo.nodes), "links": links},
            "traffic_matrix_bps": np.asarray(tm, dtype=float).tolist(), "mlu": mlu, "predicted_mlu": mlu,
            "link_utilization": {l["name"]: mlu * (0.5 + 0.5 * (i % 2)) for i, l in enumerate(links)},
            "router": router, "time": t}


def recorded_states() -> list[dict]:
    import json

    return json.loads((FIXTURES / "controller_states.json").read_text())


class FakeClock:
    """Monotonic clock the test moves by hand (rate limits and rollback windows without sleeping)."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
