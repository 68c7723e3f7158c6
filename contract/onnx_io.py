"""The TE head's ONNX inputs, built from a tecore Topology and PathSet (numpy only, no torch).

The input names and types are in ``tellm.contract.vocabulary``; training, export, evaluation and
the benchmarks build the arrays through ``onnx_inputs`` so that one place decides their layout.
"""

from __future__ import annotations

import numpy as np

from .vocabulary import POLICY_DIM


class FeatureError(ValueError):
    """Inputs that cannot be turned into model inputs; the message names the field."""


def incidence_arrays(paths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(path_pair [Np], inc_path [nnz], inc_link [nnz]) as int64, straight from the PathSet's CSR layout."""
    path_pair = np.ascontiguousarray(paths.path_pair, dtype=np.int64)
    inc_path = np.repeat(np.arange(paths.num_paths, dtype=np.int64), np.diff(paths.path_ptr))
    inc_link = np.ascontiguousarray(paths.path_links, dtype=np.int64)
    return path_pair, inc_path, inc_link


def onnx_inputs(topo, paths, demand_bps, link_up=None, policy=None) -> dict[str, np.ndarray]:
    """The ONNX input dict for one traffic matrix.

    ``demand_bps`` is either the per-pair demand [P] (pair order of ``paths``) or a dense [N, N]
    traffic matrix (or a tecore TrafficMatrix). ``link_up`` [L] defaults to all links up; ``policy``
    [POLICY_DIM] defaults to zeros (plain min-MLU).
    """
    if paths.num_links != topo.num_links or paths.topology_hash != topo.content_hash:
        raise FeatureError("the path set was not built for this topology")
    d = getattr(demand_bps, "demand_bps", demand_bps)
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 2:
        if d.shape != (topo.num_nodes, topo.num_nodes):
            raise FeatureError(f"traffic matrix has shape {d.shape}, topology has {topo.num_nodes} nodes")
        d = d[paths.pairs[:, 0], paths.pairs[:, 1]]
    if d.shape != (paths.num_pairs,):
        raise FeatureError(f"demand_bps has shape {d.shape}, expected ({paths.num_pairs},) or [N, N]")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise FeatureError("demand_bps must be finite and >= 0")
    if link_up is None:
        up = np.ones(topo.num_links, dtype=np.float32)
    else:
        up = np.asarray(link_up, dtype=np.float32).reshape(-1)
        if up.shape != (topo.num_links,):
            raise FeatureError(f"link_up has shape {up.shape}, expected ({topo.num_links},)")
        if not np.all((up == 0) | (up == 1)):
            raise FeatureError("link_up entries must be 0 (down) or 1 (up)")
    if policy is None:
        pol = np.zeros(POLICY_DIM, dtype=np.float32)
    else:
        pol = np.asarray(policy, dtype=np.float32).reshape(-1)
        if pol.shape != (POLICY_DIM,) or not np.all(np.isfinite(pol)):
            raise FeatureError(f"policy must be {POLICY_DIM} finite numbers")
    path_pair, inc_path, inc_link = incidence_arrays(paths)
    return {
        "demand_bps": d.astype(np.float32),
        "capacity_bps": topo.capacity_bps.astype(np.float32),
        "latency_seconds": topo.latency_seconds.astype(np.float32),
        "link_up": up,
        "path_pair": path_pair,
        "inc_path": inc_path,
        "inc_link": inc_link,
        "policy": pol,
    }
