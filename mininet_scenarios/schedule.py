"""What a demo run replays on a scenario: the traffic matrix (the scenario's own, a generated family or
a real SNDlib matrix, scaled to a shortest-path load) and the default schedule of events (a burst and a
link failure). Pure: no Mininet."""

from __future__ import annotations

import networkx as nx
import numpy as np

from tecore import TrafficMatrix, ecmp_link_loads, generate, read_sndlib_demands, scale_to_mlu
from tecore.traffic import GENERATORS, find_sndlib_demands

from .scenarios import Scenario, ScenarioError
from .traffic import Event

def default_events(scenario: Scenario, demand_bps, duration_seconds: float) -> list[Event]:
    """A burst on the biggest demand (x1.5 from 30% to 45% of the run), then the busiest link under
    shortest paths whose loss leaves the network connected goes down at 60% and back up at 75%."""
    topo = scenario.topology
    d = np.asarray(demand_bps)
    s, t = np.unravel_index(int(np.argmax(d)), d.shape)
    events = [Event("burst", 0.30 * duration_seconds, topo.nodes[s], topo.nodes[t], factor=1.5,
                    until_seconds=0.45 * duration_seconds)]
    g = nx.Graph([(ln.src, ln.dst) for ln in scenario.links])
    bridges = {frozenset(e) for e in nx.bridges(g)}
    loads = ecmp_link_loads(topo, TrafficMatrix(d)) / topo.capacity_bps
    for l in np.argsort(-loads):
        u, v = topo.nodes[topo.src[l]], topo.nodes[topo.dst[l]]
        if frozenset((u, v)) not in bridges:
            events += [Event("link_down", 0.60 * duration_seconds, u, v),
                       Event("link_up", 0.75 * duration_seconds, u, v)]
            break
    return events


def traffic_matrix(scenario: Scenario, source: str, seed: int, load: float | None) -> TrafficMatrix:
    """The TM to replay, scaled so that shortest paths reach ``load`` (default: the scenario's).
    ``source``: scenario (its own TM), a generated family, or sndlib (the first real SNDlib matrix)."""
    topo = scenario.topology
    if source == "scenario":
        tm = scenario.default_tm(seed=seed)
        return tm if load is None else scale_to_mlu(topo, tm, load)
    if source in GENERATORS:
        tm = generate(topo, source, 1, seed=seed)[0]
    elif source == "sndlib":
        archive = find_sndlib_demands(scenario.name)
        if archive is None:
            raise ScenarioError(f"traffic source sndlib: no SNDlib demand archive for {scenario.name!r} in the "
                                "data folder (only abilene and geant have one; set TELLM_DATA_DIR to ../shared/data)")
        tm = next(iter(read_sndlib_demands(archive, topo, limit=1)), None)
        if tm is None:
            raise ScenarioError(f"{archive}: no non-empty traffic matrix")
    else:
        raise ScenarioError(f"traffic source {source!r}: choose scenario, sndlib or one of {', '.join(GENERATORS)}")
    return scale_to_mlu(topo, tm, scenario.load if load is None else load)
