"""Forwarding state per switch: what is installed now, and the most any routing of the path set needs.

Per switch the controller installs (ofmsgs): ``BASE_FLOWS`` fixed rules, one delivery rule per local
host, one label rule per active path crossing or ending at the switch, and per routed ingress pair one
classification rule and one select group (with a bucket per active path). Labels and buckets exist
only for paths with weight > 0, so the installed state follows the traffic; the bound is the state if
every candidate path carried traffic (all labels, a group for every pair), which is what a switch's
tables must be able to hold for this path set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tecore import PathSet, Topology

from .groups import _DPID_BITS, _LABEL_BITS, DesiredState

#: Fixed rules of every switch (LLDP, ARP, own subnet, table miss; see ofmsgs.base_flows).
BASE_FLOWS = 4


@dataclass(frozen=True)
class SwitchRules:
    """Per node (topology order): flow rules and groups installed, buckets in those groups."""

    flows: np.ndarray  # int64 [N]
    groups: np.ndarray  # int64 [N]
    buckets: np.ndarray  # int64 [N]
    bound: np.ndarray  # int64 [N]: flows + groups if every candidate path carried traffic

    @property
    def rules(self) -> np.ndarray:
        return self.flows + self.groups

    def json(self, node_dpid: np.ndarray) -> dict:
        r = self.rules
        return {
            "max_rules_per_switch": int(r.max(initial=0)),
            "bound_rules_per_switch": int(self.bound.max(initial=0)),
            "total_flows": int(self.flows.sum()), "total_groups": int(self.groups.sum()),
            "total_buckets": int(self.buckets.sum()),
            "per_switch": {str(int(d)): {"flows": int(f), "groups": int(g), "buckets": int(b), "bound": int(m)}
                           for d, f, g, b, m in zip(node_dpid, self.flows, self.groups, self.buckets, self.bound)},
        }


def _per_node(dpids: np.ndarray, node_dpid: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Count (or sum ``weights``) per node of entries living on switches ``dpids``."""
    order = np.argsort(node_dpid)
    pos = np.searchsorted(node_dpid[order], dpids)
    pos = np.minimum(pos, max(node_dpid.size - 1, 0))
    ok = node_dpid[order][pos] == dpids if node_dpid.size else np.zeros(dpids.size, dtype=bool)
    return np.bincount(order[pos[ok]], weights=None if weights is None else weights[ok],
                       minlength=node_dpid.size).astype(np.int64)


def candidate_bound(topo: Topology, paths: PathSet) -> np.ndarray:
    """int64 [N]: label, classification and group entries per node if every candidate path were active."""
    hops = paths.path_hops
    first = np.zeros(paths.path_links.size, dtype=bool)
    first[paths.path_ptr[:-1][hops > 0]] = True
    transit = topo.src[paths.path_links[~first]]
    last = paths.path_links[paths.path_ptr[1:][hops > 0] - 1]
    labels = np.bincount(np.concatenate([transit, topo.dst[last]]), minlength=topo.num_nodes)
    pairs = np.bincount(paths.pairs[:, 0], minlength=topo.num_nodes)
    return (labels + 2 * pairs).astype(np.int64)


def switch_rules(state: DesiredState, node_dpid: np.ndarray, host_dpids: np.ndarray,
                 bound_te: np.ndarray) -> SwitchRules:
    """Installed forwarding state per node; ``host_dpids``: the switch of each learnt host."""
    node_dpid = np.asarray(node_dpid, dtype=np.int64)
    labels = _per_node(state.label_keys >> _LABEL_BITS, node_dpid)
    gsw = state.group_keys >> _DPID_BITS
    groups = _per_node(gsw, node_dpid)
    buckets = _per_node(gsw, node_dpid, np.diff(state.group_ptr).astype(np.float64))
    fixed = BASE_FLOWS + _per_node(np.asarray(host_dpids, dtype=np.int64), node_dpid)
    return SwitchRules(fixed + labels + groups, groups, buckets, fixed + bound_te)
