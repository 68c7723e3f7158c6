"""What the switches must hold to realise integer path weights exactly (pure; no os-ken).

Every candidate path ``j`` has a global MPLS label ``LABEL_BASE + j``. For a pair (s, d):
- ingress switch s: one select group (``dp_hash``) with a bucket per path of non-zero weight that
  pushes the path's label and outputs to the path's first link;
- transit switches: ``mpls_label == label -> output(port of the next link)``;
- egress switch d: ``mpls_label == label -> pop the label, deliver to the host table``.
A packet follows exactly the path its ingress bucket picked, so the realised split equals the bucket
weights (no hop-by-hop rounding, no loops: candidate paths are loop-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tecore import PathSet, Topology

#: MPLS labels 0-15 are reserved.
LABEL_BASE = 16
#: Largest MPLS label (20 bits): path sets up to ~1M paths.
MAX_LABEL = (1 << 20) - 1
#: Label action meaning "pop and deliver locally" (egress switch).
POP = -1


@dataclass(frozen=True)
class Bucket:
    label: int
    port: int  # output port of the path's first link on the ingress switch
    weight: int


@dataclass(frozen=True)
class DesiredState:
    labels: dict[tuple[int, int], int]  # (dpid, label) -> output port, or POP on the egress switch
    groups: dict[tuple[int, int], tuple[Bucket, ...]]  # (ingress dpid, egress dpid) -> buckets


def path_label(path_index: np.ndarray | int) -> np.ndarray | int:
    return np.asarray(path_index) + LABEL_BASE if isinstance(path_index, np.ndarray) else path_index + LABEL_BASE


def desired_state(topo: Topology, paths: PathSet, weights: np.ndarray, node_dpid: np.ndarray,
                  link_port: np.ndarray) -> DesiredState:
    """Flows and groups for integer ``weights`` [Np].

    ``node_dpid`` [N]: datapath id of each node; ``link_port`` [L]: OpenFlow port of each link on its
    source switch (-1 = not discovered). A path with weight > 0 over an undiscovered port is an error:
    the caller marks such links down first (see failure.mask_split).
    """
    weights = np.asarray(weights, dtype=np.int64)
    node_dpid = np.asarray(node_dpid, dtype=np.int64)
    link_port = np.asarray(link_port, dtype=np.int64)
    if weights.shape != (paths.num_paths,):
        raise ValueError(f"weights has shape {weights.shape}, expected ({paths.num_paths},)")
    if paths.num_paths + LABEL_BASE > MAX_LABEL:
        raise ValueError(f"{paths.num_paths} paths do not fit in 20-bit MPLS labels")
    active = weights > 0
    entry_path = np.repeat(np.arange(paths.num_paths), paths.path_hops)
    entry_active = active[entry_path]
    links = paths.path_links
    if np.any(link_port[links[entry_active]] < 0):
        bad = int(entry_path[entry_active & (link_port[links] < 0)][0])
        raise ValueError(f"path {bad} has weight > 0 but uses a link whose port is unknown")
    first = np.zeros(links.size, dtype=bool)
    first[paths.path_ptr[:-1]] = True
    last = paths.path_ptr[1:] - 1
    labels: dict[tuple[int, int], int] = {}
    # Transit hops: every link of an active path after the first is forwarded on the label.
    t = entry_active & ~first
    labels.update(zip(zip(node_dpid[topo.src[links[t]]].tolist(), (entry_path[t] + LABEL_BASE).tolist()),
                      link_port[links[t]].tolist()))
    act = np.flatnonzero(active)
    egress = node_dpid[topo.dst[links[last[act]]]]
    labels.update(zip(zip(egress.tolist(), (act + LABEL_BASE).tolist()), [POP] * act.size))
    # Ingress groups: one per pair, buckets in path order.
    pair_of = paths.path_pair[act]
    ports = link_port[links[paths.path_ptr[act]]]
    src_dpid = node_dpid[paths.pairs[pair_of, 0]].tolist()
    dst_dpid = node_dpid[paths.pairs[pair_of, 1]].tolist()
    groups: dict[tuple[int, int], list[Bucket]] = {}
    for s, d, j, port, w in zip(src_dpid, dst_dpid, act.tolist(), ports.tolist(), weights[act].tolist()):
        groups.setdefault((s, d), []).append(Bucket(j + LABEL_BASE, port, w))
    return DesiredState(labels, {k: tuple(v) for k, v in groups.items()})
