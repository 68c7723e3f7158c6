"""Loaders for Topology Zoo GraphML, SNDlib network XML and tellm's simple YAML topology format.

Capacity policy (files often carry none), applied in this order:

1. a numeric ``capacity_bps`` edge attribute (GraphML/YAML) is used as given;
2. SNDlib: the pre-installed module's capacity, else the largest additional module (one module
   installed), in Mbit/s as the format specifies;
3. ``capacity="linkspeed"``: Topology Zoo's ``LinkSpeedRaw`` (bit/s) where an edge has it;
4. otherwise ``default_capacity_bps`` (10 Gbit/s unless told), and the topology's notes say how many
   links got it.

Routing weight is 1 (hop count) unless the file gives ``weight``. Latency comes from the great-circle
distance between node coordinates at 2/3 of light speed, else 1 ms.
Undirected edges become two directed links; self-loops and parallel edges are dropped and only the
largest connected part is kept, each reported in ``Topology.notes``.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import networkx as nx
import numpy as np

from .topology import DEFAULT_CAPACITY_BPS, DEFAULT_LATENCY_SECONDS, Topology, TopologyError

CapacityPolicy = Literal["auto", "uniform", "linkspeed"]
SNDLIB_NS = "{http://sndlib.zib.de/network}"
_FIBRE_SPEED_M_PER_S = 2.0e8
_EARTH_RADIUS_M = 6_371_000.0


def great_circle_latency_seconds(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlmb / 2) ** 2
    metres = 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))
    # Co-located PoPs still have some latency; 10 us keeps every link's latency positive.
    return max(metres / _FIBRE_SPEED_M_PER_S, 1e-5)


def _float_or_none(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _finish(name: str, g: nx.MultiGraph | nx.MultiDiGraph, coords: dict, capacity: CapacityPolicy,
            default_capacity_bps: float, notes: list[str]) -> Topology:
    """Common cleanup: drop self-loops and parallel edges, keep the largest component, build arrays."""
    loops = [(u, v) for u, v in nx.selfloop_edges(g)]
    if loops:
        g.remove_edges_from(loops)
        notes.append(f"dropped {len(loops)} self-loop edge(s)")
    if g.number_of_nodes() == 0:
        raise TopologyError(f"{name}: no nodes")
    undirected = g.to_undirected(as_view=True)
    comps = sorted(nx.connected_components(undirected), key=len, reverse=True)
    if len(comps) > 1:
        dropped = sum(len(c) for c in comps[1:])
        notes.append(f"kept the largest connected part ({len(comps[0])} nodes); "
                     f"dropped {len(comps) - 1} other part(s) with {dropped} node(s)")
        g = g.subgraph(comps[0]).copy()
    nodes = list(g.nodes())
    index = {n: i for i, n in enumerate(nodes)}
    links: dict[tuple[int, int], tuple[float, float, float]] = {}
    parallel = 0
    defaulted = 0
    for u, v, data in g.edges(data=True):
        cap = _float_or_none(data.get("capacity_bps"))
        if cap is None and capacity == "linkspeed":
            cap = _float_or_none(data.get("LinkSpeedRaw"))
        if cap is None or capacity == "uniform":
            cap = default_capacity_bps
            defaulted += 1
        weight = _float_or_none(data.get("weight")) or 1.0
        lat = _float_or_none(data.get("latency_seconds"))
        if lat is None:
            cu, cv = coords.get(u), coords.get(v)
            lat = great_circle_latency_seconds(*cu, *cv) if cu and cv else DEFAULT_LATENCY_SECONDS
        dirs = [(index[u], index[v])] if g.is_directed() else [(index[u], index[v]), (index[v], index[u])]
        for key in dirs:
            if key in links:
                parallel += 1
                # Keep the larger of two parallel links: the file lists both, we route on one.
                if cap > links[key][0]:
                    links[key] = (cap, weight, lat)
                continue
            links[key] = (cap, weight, lat)
    if parallel:
        per_edge = parallel if g.is_directed() else parallel // 2
        notes.append(f"dropped {per_edge} parallel edge(s) (kept the highest capacity of each bundle)")
    if defaulted:
        notes.append(f"{defaulted} edge(s) without a usable capacity got the default "
                     f"{default_capacity_bps / 1e9:g} Gbit/s")
    if not links:
        raise TopologyError(f"{name}: no links between distinct nodes")
    keys = list(links)
    vals = np.array([links[k] for k in keys], dtype=np.float64)
    coordinates = None
    if all(n in coords for n in nodes):
        coordinates = np.array([coords[n] for n in nodes], dtype=np.float64)
    return Topology(name=name, nodes=tuple(str(n) for n in nodes),
                    src=np.array([k[0] for k in keys]), dst=np.array([k[1] for k in keys]),
                    capacity_bps=vals[:, 0], weight=vals[:, 1], latency_seconds=vals[:, 2],
                    coordinates=coordinates, notes=tuple(notes))


def load_graphml(path: str | os.PathLike, capacity: CapacityPolicy = "auto",
                 default_capacity_bps: float = DEFAULT_CAPACITY_BPS, name: str | None = None) -> Topology:
    """Load a Topology Zoo (or any) GraphML file. Node names come from ``label`` when unique."""
    path = Path(path)
    try:
        g = nx.read_graphml(path, force_multigraph=True)
    except FileNotFoundError:
        raise TopologyError(f"{path}: no such file") from None
    except (ET.ParseError, nx.NetworkXError, KeyError, ValueError, TypeError) as exc:
        raise TopologyError(f"{path}: not a readable GraphML file ({exc})") from None
    notes: list[str] = []
    if g.is_directed() and "Topology Zoo" in str(g.graph.get("Creator", "")):
        # Zoo files declare edgedefault="directed" but describe undirected links (its README and
        # the data's README say so): treat each edge as a bidirectional link.
        g = nx.MultiGraph(g)
    labels = {n: str(d.get("label", n)).strip() or str(n) for n, d in g.nodes(data=True)}
    counts: dict[str, int] = {}
    for lab in labels.values():
        counts[lab] = counts.get(lab, 0) + 1
    dup = {lab for lab, c in counts.items() if c > 1}
    if dup:
        notes.append(f"{len(dup)} duplicate node label(s) ({', '.join(sorted(dup)[:3])}...) "
                     "were made unique with the GraphML node id")
    mapping = {n: (f"{lab}#{n}" if lab in dup else lab) for n, lab in labels.items()}
    coords = {}
    for n, d in g.nodes(data=True):
        lon, lat = _float_or_none_signed(d.get("Longitude")), _float_or_none_signed(d.get("Latitude"))
        if lon is not None and lat is not None:
            coords[mapping[n]] = (lon, lat)
    g = nx.relabel_nodes(g, mapping)
    return _finish(name or path.stem, g, coords, capacity, default_capacity_bps, notes)


def _float_or_none_signed(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def load_sndlib_network(path: str | os.PathLike, name: str | None = None,
                        default_capacity_bps: float = DEFAULT_CAPACITY_BPS) -> Topology:
    """Load an SNDlib native-XML network (capacities in Mbit/s; links are undirected)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise TopologyError(f"{path}: no such file") from None
    except ET.ParseError as exc:
        raise TopologyError(f"{path}: not well-formed XML ({exc})") from None
    if root.tag != f"{SNDLIB_NS}network":
        raise TopologyError(f"{path}: not an SNDlib network file (root element {root.tag!r})")
    g = nx.MultiGraph()
    coords = {}
    for node in root.iter(f"{SNDLIB_NS}node"):
        nid = node.get("id")
        if not nid:
            raise TopologyError(f"{path}: a <node> has no id")
        g.add_node(nid)
        x, y = node.findtext(f"{SNDLIB_NS}coordinates/{SNDLIB_NS}x"), node.findtext(f"{SNDLIB_NS}coordinates/{SNDLIB_NS}y")
        if _float_or_none_signed(x) is not None and _float_or_none_signed(y) is not None:
            coords[nid] = (float(x), float(y))
    notes: list[str] = []
    for link in root.iter(f"{SNDLIB_NS}link"):
        lid = link.get("id", "?")
        s, t = link.findtext(f"{SNDLIB_NS}source"), link.findtext(f"{SNDLIB_NS}target")
        if s is None or t is None:
            raise TopologyError(f"{path}: link {lid} lacks <source> or <target>")
        s, t = s.strip(), t.strip()
        for end in (s, t):
            if end not in g:
                raise TopologyError(f"{path}: link {lid} refers to unknown node {end!r}")
        pre = _float_or_none(link.findtext(f"{SNDLIB_NS}preInstalledModule/{SNDLIB_NS}capacity"))
        mods = [_float_or_none(m.text) for m in link.iter(f"{SNDLIB_NS}addModule")
                for m in m.iter(f"{SNDLIB_NS}capacity")]
        mods = [m for m in mods if m is not None]
        cap_mbps = pre if pre is not None else (max(mods) if mods else None)
        data = {} if cap_mbps is None else {"capacity_bps": cap_mbps * 1e6}
        g.add_edge(s, t, **data)
    if g.number_of_edges() == 0:
        raise TopologyError(f"{path}: no <link> elements")
    return _finish(name or path.stem, g, coords, "auto", default_capacity_bps, notes)


def load_yaml_topology(path: str | os.PathLike, default_capacity_bps: float = DEFAULT_CAPACITY_BPS) -> Topology:
    """tellm's simple format::

        name: diamond
        directed: false          # optional, default false: each link goes both ways
        nodes: [s1, s2, s3, s4]
        links:
          - {src: s1, dst: s2, capacity_bps: 10e6, weight: 1, latency_seconds: 0.001}
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TopologyError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("links"), list):
        raise TopologyError(f"{path}: expected a mapping with a 'links' list")
    g = nx.MultiDiGraph() if doc.get("directed") else nx.MultiGraph()
    for n in doc.get("nodes") or []:
        g.add_node(str(n))
    for i, link in enumerate(doc["links"]):
        if not isinstance(link, dict) or "src" not in link or "dst" not in link:
            raise TopologyError(f"{path}: links[{i}] needs 'src' and 'dst'")
        data = {}
        for key in ("capacity_bps", "weight", "latency_seconds"):
            if key in link:
                if _float_or_none(link[key]) is None:
                    raise TopologyError(f"{path}: links[{i}].{key} must be a number > 0, got {link[key]!r}")
                data[key] = float(link[key])
        g.add_edge(str(link["src"]), str(link["dst"]), **data)
    return _finish(str(doc.get("name") or path.stem), g, {}, "auto", default_capacity_bps, [])


def data_dirs() -> list[Path]:
    """Where named topologies are looked up: $TELLM_DATA_DIR, then ../shared/data from here and cwd."""
    dirs = []
    env = os.environ.get("TELLM_DATA_DIR")
    if env:
        dirs.append(Path(env))
    repo = Path(__file__).resolve().parent.parent
    for base in (repo, Path.cwd()):
        dirs.append(base.parent / "shared" / "data")
    seen, out = set(), []
    for d in dirs:
        if d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def find_data_dir() -> Path | None:
    for d in data_dirs():
        if (d / "topologyzoo").is_dir() or (d / "sndlib").is_dir():
            return d
    return None


def _candidates(name: str) -> list[Path]:
    out = []
    for d in data_dirs():
        out += [d / "topologyzoo" / f"{name}.graphml", d / "sndlib" / "networks" / f"{name}.xml"]
    return out


def resolve_topology_path(spec: str) -> Path:
    """A file path, or a name from the data directory (``Abilene``, ``geant``, ``zoo:X``, ``sndlib:X``)."""
    p = Path(spec)
    if p.exists() and p.is_file():
        return p
    if p.suffix.lower() in (".graphml", ".xml", ".yaml", ".yml") or "/" in spec:
        raise TopologyError(f"{spec}: no such file")
    prefix, _, bare = spec.partition(":") if ":" in spec else ("", "", spec)
    data = find_data_dir()
    if data is None:
        raise TopologyError(f"{spec!r} is not a file, and no data directory was found to look it up "
                            f"(set TELLM_DATA_DIR; looked in {', '.join(map(str, data_dirs()))})")
    zoo = {f.stem: f for f in (data / "topologyzoo").glob("*.graphml")} if prefix in ("", "zoo") else {}
    snd = {f.stem: f for f in (data / "sndlib" / "networks").glob("*.xml")} if prefix in ("", "sndlib") else {}
    exact = [m[bare] for m in (zoo, snd) if bare in m]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise TopologyError(f"{spec!r} names both {exact[0]} and {exact[1]}: say zoo:{bare} or sndlib:{bare}")
    loose = [f for m in (zoo, snd) for stem, f in m.items() if stem.lower() == bare.lower()]
    if len(loose) == 1:
        return loose[0]
    if len(loose) > 1:
        raise TopologyError(f"{spec!r} is ambiguous: {', '.join(map(str, loose))}; use zoo: or sndlib:")
    raise TopologyError(f"unknown topology {spec!r}: not a file, and not a name in {data}")


def load_topology(spec: str | os.PathLike, capacity: CapacityPolicy = "auto",
                  default_capacity_bps: float = DEFAULT_CAPACITY_BPS) -> Topology:
    """Load by file path (by extension) or by name from the data directory."""
    path = resolve_topology_path(str(spec))
    suffix = path.suffix.lower()
    if suffix == ".graphml":
        return load_graphml(path, capacity=capacity, default_capacity_bps=default_capacity_bps)
    if suffix == ".xml":
        return load_sndlib_network(path, default_capacity_bps=default_capacity_bps)
    if suffix in (".yaml", ".yml"):
        return load_yaml_topology(path, default_capacity_bps=default_capacity_bps)
    raise TopologyError(f"{path}: unknown topology format {suffix!r} (expected .graphml, .xml, .yaml)")
