"""The ``GET /state`` view of ControllerCore: the snapshot frozen each interval and its JSON expansion.

Pure Python + numpy (no os-ken). ``make_snapshot`` reads a ControllerCore; per-pair groups are frozen
as ``FrozenGroups`` and expanded by ``groups_json`` only when someone reads them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tecore import PathSet, Topology, link_loads, mlu

from .discovery import TopologyDiscovery
from .failure import path_alive
from .quantise import weights_to_split

if TYPE_CHECKING:
    from .core import ControllerCore


@dataclass(frozen=True)
class FrozenGroups:
    """What groups_json needs, frozen with a snapshot."""

    topo: Topology
    paths: PathSet
    node_dpid: np.ndarray
    labels: np.ndarray  # int64 [Np]: MPLS label of each path
    origin: np.ndarray  # int64 [Np]: base path index, < 0 for a repair path
    weights: np.ndarray
    alive: np.ndarray
    gid_of: dict
    realised: dict


def make_snapshot(core: ControllerCore) -> dict:
    """What GET /state serves (see state_json), frozen at the end of an interval."""
    snap = {
        "topology": {"name": None, "nodes": [], "dpids": [], "links": [],
                     "connected_switches": sorted(core.disc.connected),
                     "undeclared_links": [list(k) for k in sorted(core.disc.undeclared)]},
        "discovery": discovery_json(core.discovery, core.label_base),
        "hosts": [{"ip": h.ip, "mac": h.mac, "dpid": h.dpid, "port": h.port} for h in core.hosts.values()],
        "traffic_matrix_bps": [], "traffic_matrix_total_bps": 0.0, "mlu": 0.0, "predicted_mlu": None,
        "predicted_link_utilization": {}, "router_predicted_mlu": None, "routing_age_seconds": None, "routing": {},
        "shortest_path_mlu": None, "link_utilization": {}, "link_throughput_bps": {},
        "router": None, "router_configured": getattr(core.router, "name", str(core.router)),
        "last_routing_time": core.routing_time, "routing_seconds": None, "loops": core.loops,
        "_groups": None,  # expanded by state_json
        "time": time.time(),
    }
    if core.topo is None:  # discovery has not settled yet
        return snap
    topo, up = core.topo, core.link_up()
    thr = core.link_throughput_bps()
    util = thr / topo.capacity_bps
    tm = core.tm.matrix()
    # Per-pair groups are expanded only when someone reads them (state_json): building dicts for
    # every path of a large network each interval would dominate the control loop. The topology
    # and paths are frozen with them (a discovered topology may be replaced meanwhile).
    inst = core.installed
    gid_of = dict(zip(inst.state.group_keys.tolist(), inst.group_ids.tolist()))
    frozen = None if core.weights is None else FrozenGroups(
        topo, core.paths, core.node_dpid, core.path_labels, core.repair.origin, core.weights,
        path_alive(core.paths, up), gid_of, dict(core.realised))
    r = core.routing
    demand = core.pair_demand_bps(tm)
    # Predicted loads are those of the installed weights (quantised, small paths dropped, deadband
    # applied), not of the router's raw split: that is what the switches are asked to realise.
    predicted = None if core.weights is None else link_loads(core.paths, core.installed_split(), demand)
    sp = core.counterfactual_split(up)
    snap["topology"].update({
        "name": topo.name, "nodes": list(topo.nodes), "dpids": [int(x) for x in core.node_dpid],
        "links": [{"id": i, "name": core.link_names[i], "src": topo.nodes[topo.src[i]],
                   "dst": topo.nodes[topo.dst[i]], "capacity_bps": float(topo.capacity_bps[i]),
                   "port": int(core.disc.link_port[i]), "up": bool(up[i])} for i in range(topo.num_links)]})
    snap.update({
        "traffic_matrix_bps": tm.tolist(),
        "traffic_matrix_total_bps": float(tm.sum()),
        "mlu": float(np.max(util, initial=0.0)),
        "predicted_mlu": None if predicted is None else mlu(topo, predicted),
        "predicted_link_utilization": {} if predicted is None else
        dict(zip(core.link_names, (predicted / topo.capacity_bps).tolist())),
        "router_predicted_mlu": None if r is None else float(r.predicted_mlu),
        "shortest_path_mlu": mlu(topo, link_loads(core.paths, sp, demand)),
        "link_utilization": dict(zip(core.link_names, util.tolist())),
        "link_throughput_bps": dict(zip(core.link_names, thr.tolist())),
        "router": None if r is None else r.router,
        "routing_seconds": None if r is None else r.seconds,
        "routing_age_seconds": core.routing_age_seconds(),
        "routing": core.routing_status(),
        "repair": core.repair.state_json(),
        "forwarding": core.forwarding_json(),
        "_groups": frozen,
    })
    return snap


def discovery_json(d: TopologyDiscovery | None, label_base: int) -> dict:
    """The ``discovery`` section: mode, and in discovery mode what has been learnt."""
    if d is None:
        return {"mode": "file"}
    built = d.installed
    return {
        "mode": "discovered", "settled": d.settled, "settle_polls": d.settle_polls,
        "switches": sorted(d.net.switches),
        "lldp_links": [[a, p, b, q] for (a, p), (b, q) in sorted(d.net.links.items())],
        "default_capacity_bps": d.default_capacity_bps,
        "default_capacity_links": [] if built is None else list(built.defaulted),
        "one_way_links": [] if built is None else built.one_way,
        "unlinked_switches": [] if built is None else list(built.left_out),
        "topology_key": None if built is None else built.key,
        "label_base": label_base,
    }


def groups_json(frozen: FrozenGroups | None) -> dict:
    """{"s->d": [{path, label, repair, weight, split, alive, realised}]} for the weights of one snapshot.

    ``realised``: the share of the bucket's bytes in the last polling interval, read from the
    switch's group counters (None when the path has no bucket or the group carried nothing)."""
    if frozen is None:
        return {}
    topo, paths, node_dpid, weights, alive = frozen.topo, frozen.paths, frozen.node_dpid, frozen.weights, frozen.alive
    split = weights_to_split(weights, paths.pair_ptr)
    out = {}
    for p in range(paths.num_pairs):
        a, b = paths.pair_ptr[p], paths.pair_ptr[p + 1]
        s, d = paths.pairs[p]
        s_dp, d_dp = int(node_dpid[s]), int(node_dpid[d])
        gid = frozen.gid_of.get((s_dp << 32) | d_dp)
        shares = frozen.realised.get((s_dp, gid)) if gid is not None else None
        active = [j for j in range(a, b) if weights[j] > 0]
        if shares is not None and len(shares) != len(active):
            shares = None  # counters of an older group layout
        bucket = {j: i for i, j in enumerate(active)}
        out[f"{topo.nodes[s]}->{topo.nodes[d]}"] = [
            {"path": [topo.nodes[n] for n in paths.path_nodes(topo, j)], "label": int(frozen.labels[j]),
             "repair": bool(frozen.origin[j] < 0), "weight": int(weights[j]), "split": float(split[j]), "alive": bool(alive[j]),
             "realised": None if shares is None or j not in bucket else float(shares[bucket[j]])}
            for j in range(a, b)]
    return out
