"""Testbed scenarios as code: switches, links with their HTB rates, hosts per switch, and a default
traffic matrix. Pure Python (no Mininet import), so the controller side and unit tests can use it.

A scenario gives two views of one network that must agree:
- the Mininet network (``tellm.mininet_scenarios.net.Testbed``): bridge ``<bridge_prefix><i>`` (``s<i>``
  by default) with datapath id i, hosts ``h<i>x<j>`` per the addressing contract
  (``tellm.controller.addressing``), TCLinks shaped to ``rate_bps``;
- the tecore YAML topology the controller reads (``Scenario.yaml_doc``): the same nodes in dpid order,
  capacities in bit/s equal to the TCLink rates, plus ``dpids`` and ``hosts_per_switch``.

Abilene and GEANT are built at run time from the SNDlib network files in the data directory
(``$TELLM_DATA_DIR`` or ../shared/data): SNDlib's licence keeps its data out of this package, so these
two scenarios need that folder (a clear error says so when it is absent); diamond and leafspine need
nothing. Link rates are scaled down to a few Mbit/s (largest SNDlib link -> 4 Mbit/s, ratios kept,
floor 0.5 Mbit/s): the userspace datapath on a shared 2-core machine forwards only a modest total rate
(see benchmarks/README.md for what was measured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from tecore import Topology, TrafficMatrix
from tecore.loaders import load_yaml_topology
from tellm.controller import addressing


class ScenarioError(ValueError):
    """An unknown scenario or an inconsistent scenario file."""


@dataclass(frozen=True)
class LinkSpec:
    """An undirected link; both directions get ``rate_bps`` (a TCLink shapes each end's egress)."""

    src: str
    dst: str
    rate_bps: float
    latency_seconds: float = 1e-3  # for latency-aware policies only: this kernel has no netem
    weight: float = 1.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    switches: tuple[str, ...]  # topology node names; switch i (1-based) in this order has dpid i
    links: tuple[LinkSpec, ...]
    hosts_per_switch: int = 1
    #: Default demand as {(src switch, dst switch): bit/s}; empty = a gravity TM scaled to ``load``.
    demands_bps: dict[tuple[str, str], float] = field(default_factory=dict)
    #: Shortest-path MLU the generated default TM is scaled to (ignored when demands_bps is given).
    load: float = 0.6
    #: Mininet names switch i ``<bridge_prefix><i>`` (bridge and interface names, not topology names).
    bridge_prefix: str = "s"

    def __post_init__(self) -> None:
        names = set(self.switches)
        if len(names) != len(self.switches):
            raise ScenarioError(f"scenario {self.name}: duplicate switch names")
        if not 1 <= len(self.switches) <= addressing.MAX_DPID:
            raise ScenarioError(f"scenario {self.name}: 1..{addressing.MAX_DPID} switches supported")
        if not (self.bridge_prefix.isalpha() and self.bridge_prefix.isascii() and len(self.bridge_prefix) <= 3):
            raise ScenarioError(f"scenario {self.name}: bridge_prefix must be 1-3 ASCII letters")
        if not 1 <= self.hosts_per_switch <= 254:
            raise ScenarioError(f"scenario {self.name}: hosts_per_switch must be in 1..254")
        seen = set()
        for ln in self.links:
            if ln.src not in names or ln.dst not in names or ln.src == ln.dst:
                raise ScenarioError(f"scenario {self.name}: bad link {ln.src}-{ln.dst}")
            key = frozenset((ln.src, ln.dst))
            if key in seen:
                raise ScenarioError(f"scenario {self.name}: parallel link {ln.src}-{ln.dst}")
            seen.add(key)
            if not ln.rate_bps > 0:
                raise ScenarioError(f"scenario {self.name}: link {ln.src}-{ln.dst} needs a rate > 0")
        for (s, d), v in self.demands_bps.items():
            if s not in names or d not in names or s == d or v < 0:
                raise ScenarioError(f"scenario {self.name}: bad demand {s}->{d} = {v}")

    # -------------------------------------------------------------------- naming contract
    def dpid(self, switch: str) -> int:
        return self.switches.index(switch) + 1

    def switch_name(self, dpid: int) -> str:
        """Mininet name of switch ``dpid`` (SNDlib names are too long for interface names)."""
        return f"{self.bridge_prefix}{dpid}"

    @staticmethod
    def host_name(dpid: int, j: int) -> str:
        return f"h{dpid}x{j}"

    host_ip = staticmethod(addressing.host_ip)
    host_mac = staticmethod(addressing.host_mac)

    def hosts(self) -> list[tuple[str, int, int]]:
        """(host name, dpid, j) for every host, switch by switch."""
        return [(self.host_name(i, j), i, j) for i in range(1, len(self.switches) + 1)
                for j in range(1, self.hosts_per_switch + 1)]

    # -------------------------------------------------------------------- tecore view
    def yaml_doc(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "directed": False,
            "nodes": list(self.switches),
            "links": [{"src": ln.src, "dst": ln.dst, "capacity_bps": float(ln.rate_bps),
                       "weight": float(ln.weight), "latency_seconds": float(ln.latency_seconds)}
                      for ln in self.links],
            "dpids": {s: i + 1 for i, s in enumerate(self.switches)},
            "hosts_per_switch": self.hosts_per_switch,
        }

    def write_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# tellm scenario {self.name}: {self.description}\n"
                        "# Link capacities are the Mininet TCLink (HTB) rates in bit/s.\n"
                        + yaml.safe_dump(self.yaml_doc(), sort_keys=False))
        return path

    @cached_property
    def topology(self) -> Topology:
        """The tecore topology, loaded through the same YAML the controller reads."""
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            topo = load_yaml_topology(self.write_yaml(Path(d) / f"{self.name}.yaml"))
        if topo.nodes != self.switches:
            raise ScenarioError(f"scenario {self.name}: tecore reordered the nodes ({topo.nodes})")
        return topo

    def default_tm(self, seed: int = 0) -> TrafficMatrix:
        """The scenario's traffic: its hand-made demands, or a gravity TM scaled to ``load``."""
        from tecore import generate, scale_to_mlu

        n = len(self.switches)
        if self.demands_bps:
            d = np.zeros((n, n))
            for (s, t), v in self.demands_bps.items():
                d[self.dpid(s) - 1, self.dpid(t) - 1] = v
            return TrafficMatrix(d, label=f"{self.name}-default")
        tm = generate(self.topology, "gravity", 1, seed=seed)[0]
        return scale_to_mlu(self.topology, tm, self.load)


# ------------------------------------------------------------------------ the scenarios
def diamond(rate_bps: float = 4e6) -> Scenario:
    """Five switches in a ring: s1-s2-s4 (2 hops) and s1-s3-s5-s4 (3 hops) are disjoint paths.
    Both big demands (s1<->s4) fit on the short path only at 80% of capacity; splitting them over
    both paths halves the MLU. Shortest-path routing cannot do that."""
    sw = ("a", "b", "c", "d", "e")
    links = tuple(LinkSpec(u, v, rate_bps) for u, v in (("a", "b"), ("b", "d"), ("a", "c"), ("c", "e"), ("e", "d")))
    return Scenario("diamond", "5-switch ring; two disjoint paths of 2 and 3 hops between a and d",
                    sw, links, hosts_per_switch=1,
                    demands_bps={("a", "d"): 0.8 * rate_bps, ("d", "a"): 0.8 * rate_bps})


def leafspine(spines: int = 2, leaves: int = 4, hosts: int = 2, rate_bps: float = 4e6) -> Scenario:
    sw = tuple(f"spine{i}" for i in range(1, spines + 1)) + tuple(f"leaf{i}" for i in range(1, leaves + 1))
    links = tuple(LinkSpec(f"leaf{l}", f"spine{s}", rate_bps)
                  for l in range(1, leaves + 1) for s in range(1, spines + 1))
    # Leaf-to-leaf traffic only: spines have no hosts that send (they still get the contract's hosts).
    demands = {}
    rng = np.random.default_rng(7)
    for a in range(1, leaves + 1):
        for b in range(1, leaves + 1):
            if a != b:
                demands[(f"leaf{a}", f"leaf{b}")] = float(rng.uniform(0.15, 0.45)) * rate_bps
    return Scenario("leafspine", f"{spines} spines x {leaves} leaves, every leaf linked to every spine",
                    sw, links, hosts_per_switch=hosts, demands_bps=demands)


def from_yaml(path: str | Path, load: float = 0.6) -> Scenario:
    """A scenario from a tellm YAML topology (as written by ``write_yaml``)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario ({exc})") from None
    try:
        nodes = tuple(str(n) for n in doc["nodes"])
        dpids = {str(k): int(v) for k, v in (doc.get("dpids") or {}).items()}
        if dpids and [dpids.get(n) for n in nodes] != list(range(1, len(nodes) + 1)):
            raise ScenarioError(f"{path}: dpids must number the nodes 1..N in list order")
        links = tuple(LinkSpec(str(ln["src"]), str(ln["dst"]), float(ln["capacity_bps"]),
                               float(ln.get("latency_seconds", 1e-3)), float(ln.get("weight", 1.0)))
                      for ln in doc["links"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(f"{path}: not a tellm scenario topology ({exc!r})") from None
    return Scenario(str(doc.get("name") or path.stem), str(doc.get("description") or path.stem), nodes,
                    links, hosts_per_switch=int(doc.get("hosts_per_switch", 1)), load=load)


def from_sndlib(spec: str, name: str, max_rate_mbps: float = 4.0, min_rate_mbps: float = 0.5,
                load: float = 0.6) -> Scenario:
    """A scenario from an SNDlib network in the data directory, link rates scaled to a few Mbit/s."""
    from tecore import TopologyError, load_topology

    try:
        topo = load_topology(spec)
    except TopologyError as exc:
        raise ScenarioError(f"the {name} scenario is built from SNDlib's network file, which tellm does not "
                            f"ship (SNDlib licence); set TELLM_DATA_DIR to a folder with sndlib/networks/ "
                            f"({exc})") from None
    scale = max_rate_mbps * 1e6 / float(topo.capacity_bps.max())
    links, seen = [], set()
    for lid in range(topo.num_links):
        u, v = int(topo.src[lid]), int(topo.dst[lid])
        if (v, u) in seen:
            continue
        seen.add((u, v))
        back = topo.link_index.get((v, u))
        cap = float(topo.capacity_bps[lid])
        if back is not None and float(topo.capacity_bps[back]) != cap:
            raise ScenarioError(f"{spec}: link {u}-{v} has different capacities per direction")
        rate_bps = round(max(min_rate_mbps * 1e6, cap * scale) / 1e4) * 1e4  # 10 kbit/s steps
        links.append(LinkSpec(topo.nodes[u], topo.nodes[v], rate_bps, float(topo.latency_seconds[lid])))
    return Scenario(name, f"SNDlib {topo.name}: {topo.num_nodes} nodes, {len(links)} links, capacities x{scale:.3g}",
                    topo.nodes, tuple(links), hosts_per_switch=1, load=load)


SCENARIOS = {
    "diamond": diamond,
    "leafspine": leafspine,
    "abilene": lambda: from_sndlib("sndlib:abilene", "abilene", load=0.6),
    "geant": lambda: from_sndlib("sndlib:geant", "geant", load=0.5),
    # Topology Zoo GARR (60 switches), shipped in topologies/ (see the file's header).
    "garr": lambda: from_yaml(Path(__file__).parent / "topologies" / "garr.yaml", load=0.6),
}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]()
    except KeyError:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
