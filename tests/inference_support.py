"""Shared helpers of the inference tests (tests/unit/test_inference_*.py, tests/integration/test_inference_subprocess.py).

Model under test: the shipped TE head (inference/models/tellm-te.onnx) by default; the equal-split
reference model (built with onnx.helper into a temp dir) with TELLM_TEST_MODEL=reference:

    TELLM_TEST_MODEL=reference pytest tests/unit/test_inference_*.py tests/integration/test_inference_subprocess.py

Assertions that only the reference model satisfies (exact equal split) check ``is_reference``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from tecore import PathSet, Topology, compute_paths

from tellm.commands.serve import build_server
from tellm.contract.client import InferenceClient
from tellm.inference.reference_model import write_equal_split_model
from tellm.inference.artifacts import DEFAULT_MODEL_PATH
from tellm.inference.server import ServerConfig

TEST_MODEL_ENV = "TELLM_TEST_MODEL"


def model_under_test(directory: Path, name: str = "model.onnx") -> tuple[Path, bool]:
    """Copy the model under test into ``directory`` (tests replace it there); (path, is_reference).

    Default: the shipped TE head (inference/models/tellm-te.onnx). TELLM_TEST_MODEL=reference picks
    the equal-split reference model; any other value is a model file path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / name
    chosen = os.environ.get(TEST_MODEL_ENV)
    if chosen == "reference":
        return write_equal_split_model(dest), True
    src = Path(chosen) if chosen else DEFAULT_MODEL_PATH
    if not src.exists():
        pytest.fail(f"model under test {src} does not exist (set {TEST_MODEL_ENV})")
    shutil.copyfile(src, dest)
    card = src.with_suffix(".json")
    if card.exists():
        shutil.copyfile(card, dest.with_suffix(".json"))
    return dest, False


def other_model(directory: Path, name: str = "other.onnx") -> Path:
    """A second, different model file (for hot-reload tests): a reference build with other bytes."""
    return write_equal_split_model(directory / name, variant="other")


def ring_topology(n: int = 6, chords: int = 2, seed: int = 0, capacity_bps: float = 10e9) -> Topology:
    """A ring with a few chords: every pair has several paths, so splits and failures matter."""
    rng = np.random.default_rng(seed)
    g = nx.cycle_graph(n)
    for _ in range(chords):
        u, v = rng.choice(n, size=2, replace=False)
        g.add_edge(int(u), int(v))
    for u, v in g.edges:
        g.edges[u, v]["capacity_bps"] = float(capacity_bps * rng.uniform(0.5, 2.0))
        g.edges[u, v]["latency_seconds"] = float(rng.uniform(1e-4, 5e-3))
    g = nx.relabel_nodes(g, {i: f"s{i + 1}" for i in g.nodes})
    return Topology.from_networkx(g, name=f"ring{n}")


def paths_for(topo: Topology, k: int = 3) -> PathSet:
    return compute_paths(topo, k=k, workers=1, use_cache=False)


def demands(paths: PathSet, seed: int = 0, scale_bps: float = 1e8) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, scale_bps, size=paths.num_pairs).astype(np.float32)


def check_reply_contract(topo: Topology, paths: PathSet, demand_bps: np.ndarray, link_up: np.ndarray | None,
                         reply, atol: float = 1e-5) -> None:
    """What every model with the tellm TE interface must return, checked against tecore math."""
    split = np.asarray(reply.split, dtype=np.float64)
    assert split.shape == (paths.num_paths,)
    assert np.all(np.isfinite(split)) and np.all(split >= -1e-7)
    np.testing.assert_allclose(np.bincount(paths.path_pair, split, minlength=paths.num_pairs), 1.0, atol=atol)
    up = np.ones(topo.num_links, bool) if link_up is None else np.asarray(link_up, bool)
    path_up = ~np.asarray((paths.incidence @ (~up).astype(np.float64)) > 0).ravel()
    pair_has_up = np.bincount(paths.path_pair, path_up, minlength=paths.num_pairs) > 0
    must_be_zero = ~path_up & pair_has_up[paths.path_pair]
    assert np.all(split[must_be_zero] <= 1e-6), "a path over a down link got traffic although its pair has an up path"
    loads = paths.incidence.T @ (split * demand_bps.astype(np.float64)[paths.path_pair])
    scale = max(float(loads.max()), 1.0)
    np.testing.assert_allclose(reply.link_load_bps, loads, atol=1e-4 * scale)
    util = loads / topo.capacity_bps * up
    assert reply.mlu == pytest.approx(float(util.max()), rel=1e-4, abs=1e-9)


class RunningServer:
    """An in-process server on a free loopback port (built as ``tellm serve`` builds it, PolicyService
    included), plus a client for it."""

    def __init__(self, model_path: Path, **config):
        config.setdefault("metrics_port", 0)
        config.setdefault("watch_interval_seconds", 0.1)
        config.setdefault("grace_seconds", 1.0)
        self.server = build_server(ServerConfig(model_path=model_path, host="127.0.0.1", port=0, **config))
        self.port = self.server.start()
        self.address = f"127.0.0.1:{self.port}"
        self.client = InferenceClient(self.address, timeout_seconds=10.0, retries=2)

    def stop(self) -> None:
        self.client.close()
        self.server.stop(grace_seconds=1.0)


def big_ring(n: int = 200, capacity_bps: float = 10e9) -> tuple[Topology, PathSet]:
    """A bidirectional ring with all ordered pairs and both ways round as paths, built with numpy.

    n = 200 gives 39,800 pairs, 79,600 paths and ~8M path-link entries: requests far above gRPC's
    default 4 MiB message limit and model runs long enough to outlast a short deadline.
    """
    idx = np.arange(n)
    src = np.concatenate([idx, (idx + 1) % n])  # link i: i -> i+1 ; link n+i: i+1 -> i
    dst = np.concatenate([(idx + 1) % n, idx])
    links = 2 * n
    topo = Topology(name=f"bigring{n}", nodes=tuple(f"r{i}" for i in range(n)), src=src, dst=dst,
                    capacity_bps=np.full(links, capacity_bps), weight=np.ones(links),
                    latency_seconds=np.full(links, 1e-3))
    s, d = np.meshgrid(idx, idx, indexing="ij")
    mask = s != d
    s, d = s[mask], d[mask]
    cw_len = (d - s) % n
    ccw_len = n - cw_len
    lengths = np.stack([cw_len, ccw_len], axis=1).reshape(-1)  # path 2i: clockwise, 2i+1: counter-clockwise
    path_ptr = np.concatenate([[0], np.cumsum(lengths)])
    step = np.arange(path_ptr[-1]) - np.repeat(path_ptr[:-1], lengths)  # position of each entry in its path
    start = np.repeat(np.stack([s, s], axis=1).reshape(-1), lengths)
    clockwise = np.repeat(np.tile([True, False], s.shape[0]), lengths)
    path_links = np.where(clockwise, (start + step) % n, n + (start - 1 - step) % n)
    paths = PathSet(topology_hash=topo.content_hash, num_nodes=n, num_links=links,
                    pairs=np.stack([s, d], axis=1), pair_ptr=np.arange(0, 2 * s.shape[0] + 1, 2),
                    path_ptr=path_ptr, path_links=path_links, strategy="ring", k=2)
    return topo, paths
