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

from dataclasses import dataclass, field

import numpy as np

from tecore import PathSet, Topology

#: MPLS labels 0-15 are reserved.
LABEL_BASE = 16
#: Largest MPLS label (20 bits): path sets up to ~1M paths.
MAX_LABEL = (1 << 20) - 1
#: Second label space: a new path set (discovered topology changed) takes the half the installed
#: one does not use, so that old and new labels never collide while both are installed.
LABEL_ALT_BASE = 1 << 19
#: Label action meaning "pop and deliver locally" (egress switch).
POP = -1


@dataclass(frozen=True)
class Bucket:
    label: int
    port: int  # output port of the path's first link on the ingress switch
    weight: int


_LABEL_BITS = 21  # label key = dpid << 21 | label (labels < 2**20)
_DPID_BITS = 32  # group key = ingress dpid << 32 | egress dpid


def label_key(dpid, label):
    return (np.asarray(dpid, dtype=np.int64) << _LABEL_BITS) | np.asarray(label, dtype=np.int64)


def group_key(src_dpid, dst_dpid):
    return (np.asarray(src_dpid, dtype=np.int64) << _DPID_BITS) | np.asarray(dst_dpid, dtype=np.int64)


_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class DesiredState:
    """Flows and groups as sorted arrays (vectorised diffs; a dict view exists for tests and logs).

    Labels: ``label_keys`` (dpid << 21 | label, sorted, unique) and ``label_ports`` (port or POP).
    Groups: ``group_keys`` (ingress dpid << 32 | egress dpid, sorted, unique); the buckets of group g
    are rows ``group_ptr[g]:group_ptr[g+1]`` of ``bucket_label/port/weight`` (in path order).
    """

    label_keys: np.ndarray = field(default_factory=lambda: _EMPTY)
    label_ports: np.ndarray = field(default_factory=lambda: _EMPTY)
    group_keys: np.ndarray = field(default_factory=lambda: _EMPTY)
    group_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    bucket_label: np.ndarray = field(default_factory=lambda: _EMPTY)
    bucket_port: np.ndarray = field(default_factory=lambda: _EMPTY)
    bucket_weight: np.ndarray = field(default_factory=lambda: _EMPTY)

    # -------------------------------------------------------------- dict views
    @property
    def labels(self) -> dict[tuple[int, int], int]:
        return {(k >> _LABEL_BITS, k & ((1 << _LABEL_BITS) - 1)): p
                for k, p in zip(self.label_keys.tolist(), self.label_ports.tolist())}

    def buckets(self, g: int) -> tuple[Bucket, ...]:
        a, b = int(self.group_ptr[g]), int(self.group_ptr[g + 1])
        return tuple(Bucket(lab, port, w) for lab, port, w in zip(self.bucket_label[a:b].tolist(),
                                                                   self.bucket_port[a:b].tolist(),
                                                                   self.bucket_weight[a:b].tolist()))

    @property
    def groups(self) -> dict[tuple[int, int], tuple[Bucket, ...]]:
        return {(k >> _DPID_BITS, k & ((1 << _DPID_BITS) - 1)): self.buckets(g)
                for g, k in enumerate(self.group_keys.tolist())}

    @classmethod
    def from_dicts(cls, labels: dict[tuple[int, int], int],
                   groups: dict[tuple[int, int], tuple[Bucket, ...]]) -> DesiredState:
        lk = label_key([k[0] for k in labels], [k[1] for k in labels]) if labels else _EMPTY
        lp = np.array(list(labels.values()), dtype=np.int64) if labels else _EMPTY
        order = np.argsort(lk)
        gkeys = sorted(groups, key=lambda k: int(group_key(*k)))
        rows = [b for k in gkeys for b in groups[k]]
        ptr = np.concatenate([[0], np.cumsum([len(groups[k]) for k in gkeys])]).astype(np.int64)
        return cls(lk[order], lp[order], group_key([k[0] for k in gkeys], [k[1] for k in gkeys]) if gkeys else _EMPTY,
                   ptr, np.array([b.label for b in rows], dtype=np.int64),
                   np.array([b.port for b in rows], dtype=np.int64), np.array([b.weight for b in rows], dtype=np.int64))

    # -------------------------------------------------------------- selection
    def select_groups(self, keep: np.ndarray) -> DesiredState:
        """Only the groups where ``keep`` [G] is True (labels unchanged)."""
        keep = np.asarray(keep, dtype=bool)
        counts = np.diff(self.group_ptr)
        rows = np.repeat(keep, counts)
        return DesiredState(self.label_keys, self.label_ports, self.group_keys[keep],
                            np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64),
                            self.bucket_label[rows], self.bucket_port[rows], self.bucket_weight[rows])

    def on_switches(self, dpids: np.ndarray) -> DesiredState:
        """Only what lives on the given switches (e.g. the connected ones)."""
        dpids = np.asarray(dpids, dtype=np.int64)
        lk = np.isin(self.label_keys >> _LABEL_BITS, dpids)
        sel = self.select_groups(np.isin(self.group_keys >> _DPID_BITS, dpids))
        return DesiredState(self.label_keys[lk], self.label_ports[lk], sel.group_keys, sel.group_ptr,
                            sel.bucket_label, sel.bucket_port, sel.bucket_weight)


def path_label(path_index):
    return np.asarray(path_index) + LABEL_BASE


def label_space_end(label_base: int) -> int:
    """One past the last label of the label space (half) that starts at ``label_base``."""
    return LABEL_ALT_BASE if label_base < LABEL_ALT_BASE else MAX_LABEL + 1


@dataclass(frozen=True, eq=False)
class Forwarding:
    """The part of a DesiredState that depends only on which paths are active (weight > 0): labels,
    groups and their buckets' labels and ports. ``rows`` [B]: the path of each bucket row."""

    active: np.ndarray  # bool [Np]
    labels: DesiredState  # bucket_weight unset
    rows: np.ndarray

    def with_weights(self, weights: np.ndarray) -> DesiredState:
        s = self.labels
        return DesiredState(s.label_keys, s.label_ports, s.group_keys, s.group_ptr, s.bucket_label,
                            s.bucket_port, np.asarray(weights, dtype=np.int64)[self.rows])


def _label_of(paths: PathSet, labels: int | np.ndarray) -> np.ndarray:
    label_of = np.asarray(labels, dtype=np.int64)
    if label_of.ndim == 0:
        if paths.num_paths + int(label_of) > MAX_LABEL:
            raise ValueError(f"{paths.num_paths} paths do not fit in 20-bit MPLS labels from {int(label_of)}")
        return int(label_of) + np.arange(paths.num_paths, dtype=np.int64)
    if label_of.shape != (paths.num_paths,) or (label_of.size and label_of.max() > MAX_LABEL):
        raise ValueError(f"labels has shape {label_of.shape} (max {label_of.max(initial=0)}), expected "
                         f"({paths.num_paths},) within 20 bits")
    return label_of


def forwarding(topo: Topology, paths: PathSet, active: np.ndarray, node_dpid: np.ndarray,
               link_port: np.ndarray, labels: int | np.ndarray = LABEL_BASE) -> Forwarding:
    """Labels and group layout for the paths where ``active`` [Np] is True (see desired_state)."""
    node_dpid = np.asarray(node_dpid, dtype=np.int64)
    link_port = np.asarray(link_port, dtype=np.int64)
    label_of = _label_of(paths, labels)
    active = np.asarray(active, dtype=bool)
    # Work on the link entries of active paths only (most paths carry nothing under LP/ECMP routing).
    act = np.flatnonzero(active)
    hops = paths.path_hops[act]
    starts = paths.path_ptr[act]
    rows = np.repeat(starts - np.cumsum(hops) + hops, hops) + np.arange(hops.sum())
    entry_path = np.repeat(act, hops)
    links = paths.path_links[rows]
    if np.any(link_port[links] < 0):
        bad = int(entry_path[link_port[links] < 0][0])
        raise ValueError(f"path {bad} has weight > 0 but uses a link whose port is unknown")
    first = np.zeros(links.size, dtype=bool)
    first[np.cumsum(hops) - hops] = True
    last = np.cumsum(hops) - 1
    # Transit hops (every link of an active path after the first) and the egress pop.
    t = ~first
    keys = np.concatenate([label_key(node_dpid[topo.src[links[t]]], label_of[entry_path[t]]),
                           label_key(node_dpid[topo.dst[links[last]]], label_of[act])])
    ports = np.concatenate([link_port[links[t]], np.full(act.size, POP, dtype=np.int64)])
    order = np.argsort(keys)  # keys are unique: no stable sort needed (3x faster)
    keys, ports = keys[order], ports[order]
    if keys.size > 1 and np.any(np.diff(keys) == 0):
        raise ValueError("a path visits a switch twice (candidate paths must be loop-free)")
    # Ingress groups: one per pair with an active path, buckets in path order.
    pair_of = paths.path_pair[act]
    gk = group_key(node_dpid[paths.pairs[pair_of, 0]], node_dpid[paths.pairs[pair_of, 1]])
    order = np.argsort(gk, kind="stable")
    gk, grows = gk[order], act[order]
    uniq, start = np.unique(gk, return_index=True)
    state = DesiredState(keys, ports, uniq, np.concatenate([start, [gk.size]]).astype(np.int64),
                         label_of[grows], link_port[paths.path_links[paths.path_ptr[grows]]],
                         np.zeros(grows.size, dtype=np.int64))
    return Forwarding(active, state, grows)


def desired_state(topo: Topology, paths: PathSet, weights: np.ndarray, node_dpid: np.ndarray,
                  link_port: np.ndarray, labels: int | np.ndarray = LABEL_BASE) -> DesiredState:
    """Flows and groups for integer ``weights`` [Np] (vectorised); path j has label ``labels + j`` when
    ``labels`` is an int (the label base), else ``labels[j]`` (int64 [Np], distinct).

    ``node_dpid`` [N]: datapath id of each node; ``link_port`` [L]: OpenFlow port of each link on its
    source switch (-1 = not discovered). A path with weight > 0 over an undiscovered port is an error:
    the caller marks such links down first (see failure.mask_split). Only paths with weight > 0 get
    labels and buckets: forwarding state follows the traffic, not the candidate path set.
    """
    weights = np.asarray(weights, dtype=np.int64)
    if weights.shape != (paths.num_paths,):
        raise ValueError(f"weights has shape {weights.shape}, expected ({paths.num_paths},)")
    return forwarding(topo, paths, weights > 0, node_dpid, link_port, labels).with_weights(weights)


class ForwardingCache:
    """desired_state for a control loop: the label and group layout is rebuilt only when the set of
    active paths, the switches, ports or labels change; a steady interval (weights move, the same
    paths carry traffic) only gathers the new bucket weights. The returned states of two intervals
    with one layout share their label and bucket arrays, which the planner's diff recognises."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._fwd: Forwarding | None = None
        self._of: tuple | None = None  # (topology, path set) the layout was built for

    def desired(self, topo: Topology, paths: PathSet, weights: np.ndarray, node_dpid: np.ndarray,
                link_port: np.ndarray, labels: np.ndarray, switches: np.ndarray) -> DesiredState:
        """desired_state(...) restricted to ``switches`` (the connected dpids)."""
        weights = np.asarray(weights, dtype=np.int64)
        if weights.shape != (paths.num_paths,):
            raise ValueError(f"weights has shape {weights.shape}, expected ({paths.num_paths},)")
        active = weights > 0
        switches = np.unique(np.asarray(switches, dtype=np.int64))
        key = (np.asarray(node_dpid).tobytes(), np.asarray(link_port).tobytes(), np.asarray(labels).tobytes(),
               switches.tobytes())
        fwd = self._fwd
        if (fwd is None or self._of is None or self._of[0] is not topo or self._of[1] is not paths
                or key != self._key or not np.array_equal(fwd.active, active)):
            fwd = forwarding(topo, paths, active, node_dpid, link_port, labels)
            if not np.array_equal(np.unique(node_dpid), switches):
                sel = fwd.labels.on_switches(switches)
                keep = np.isin(fwd.labels.group_keys >> _DPID_BITS, switches)
                fwd = Forwarding(active, sel, fwd.rows[np.repeat(keep, np.diff(fwd.labels.group_ptr))])
            self._key, self._fwd, self._of = key, fwd, (topo, paths)
        return fwd.with_weights(weights)

    def clear(self) -> None:
        self._key = self._fwd = self._of = None
