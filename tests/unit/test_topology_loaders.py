"""Topology model and loaders: real files from ../shared/data and hand-made broken ones."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from tecore import Topology, TopologyError, load_graphml, load_sndlib_network, load_topology, load_yaml_topology
from tecore.loaders import resolve_topology_path


def _topo(**kw):
    base = dict(name="t", nodes=("a", "b"), src=np.array([0, 1]), dst=np.array([1, 0]),
                capacity_bps=np.array([1e9, 1e9]), weight=np.array([1.0, 1.0]),
                latency_seconds=np.array([1e-3, 1e-3]))
    base.update(kw)
    return Topology(**base)


def test_topology_validates_its_arrays():
    assert _topo().num_links == 2
    with pytest.raises(TopologyError, match="capacity"):
        _topo(capacity_bps=np.array([1e9, 0.0]))
    with pytest.raises(TopologyError, match="self-loop"):
        _topo(dst=np.array([0, 0]))
    with pytest.raises(TopologyError, match="out of range"):
        _topo(dst=np.array([1, 5]))
    with pytest.raises(TopologyError, match="parallel"):
        _topo(src=np.array([0, 0]), dst=np.array([1, 1]))
    with pytest.raises(TopologyError, match="duplicate"):
        _topo(nodes=("a", "a"))
    with pytest.raises(TopologyError, match="no nodes"):
        _topo(nodes=(), src=np.array([]), dst=np.array([]), capacity_bps=np.array([]),
              weight=np.array([]), latency_seconds=np.array([]))


def test_networkx_round_trip_and_hash():
    g = nx.Graph()
    g.add_edge("x", "y", capacity_bps=5e9)
    g.add_edge("y", "z")
    t = Topology.from_networkx(g, name="g")
    assert t.num_links == 4 and t.is_symmetric
    assert t.capacity_bps[t.link_index[(t.node_index["y"], t.node_index["x"])]] == 5e9
    back = Topology.from_networkx(t.to_networkx(), name="g")
    assert back.content_hash == t.content_hash
    assert t.with_capacity(t.capacity_bps * 2).content_hash != t.content_hash


@pytest.mark.data
def test_topology_zoo_graphml(data_dir):
    t = load_graphml(data_dir / "topologyzoo" / "Abilene.graphml")
    assert (t.num_nodes, t.num_links) == (11, 28)  # 14 undirected edges -> 28 directed links
    assert np.all(t.capacity_bps == 10e9)
    assert any("default 10 Gbit/s" in n for n in t.notes)
    assert t.coordinates is None and np.all(t.latency_seconds == 1e-3)  # this file has no coordinates
    kdl = load_graphml(data_dir / "topologyzoo" / "Kdl.graphml")
    assert (kdl.num_nodes, kdl.num_links) == (754, 1790)  # as in TEAL's and HARP's files
    assert any("parallel" in n for n in kdl.notes) and any("duplicate node label" in n for n in kdl.notes)


@pytest.mark.data
def test_sndlib_networks_capacities(data_dir):
    ab = load_sndlib_network(data_dir / "sndlib" / "networks" / "abilene.xml")
    assert (ab.num_nodes, ab.num_links) == (12, 30)
    assert ab.capacity_bps.max() == pytest.approx(9920e6)  # preInstalledModule, Mbit/s
    ge = load_sndlib_network(data_dir / "sndlib" / "networks" / "geant.xml")
    assert (ge.num_nodes, ge.num_links) == (22, 72)
    assert np.all(ge.capacity_bps == 40000e6)  # only an additional module is listed
    assert ge.coordinates is not None  # latency from great-circle distance at 2e8 m/s
    assert 1e-5 <= ge.latency_seconds.min() and ge.latency_seconds.max() < 0.05


@pytest.mark.data
def test_names_resolve_in_the_data_dir(data_dir):
    assert resolve_topology_path("Abilene").suffix == ".graphml"
    assert resolve_topology_path("abilene").suffix == ".xml"  # exact case picks SNDlib's
    assert resolve_topology_path("sndlib:geant").name == "geant.xml"
    assert load_topology("germany50").num_nodes == 50
    with pytest.raises(TopologyError, match="unknown topology"):
        load_topology("NoSuchNetwork")


def test_graphml_drops_and_reports(tmp_path):
    g = nx.MultiGraph()
    g.add_edge("a", "b", capacity_bps=1e9)
    g.add_edge("a", "b", capacity_bps=4e9)  # parallel: the larger is kept
    g.add_edge("b", "c")
    g.add_edge("c", "c")  # self-loop
    g.add_edge("x", "y")  # a second component
    f = tmp_path / "g.graphml"
    nx.write_graphml(g, f)
    t = load_graphml(f)
    assert t.num_nodes == 3 and t.num_links == 4
    assert t.capacity_bps[t.link_index[(t.node_index["a"], t.node_index["b"])]] == 4e9
    notes = " ".join(t.notes)
    assert "self-loop" in notes and "parallel" in notes and "largest connected part" in notes


def test_graphml_capacity_attribute_directed(tmp_path):
    g = nx.DiGraph()
    g.add_edge("a", "b", capacity_bps=2e9)
    g.add_edge("b", "a", capacity_bps=3e9)
    f = tmp_path / "d.graphml"
    nx.write_graphml(g, f)
    t = load_graphml(f)
    assert sorted(t.capacity_bps.tolist()) == [2e9, 3e9]


@pytest.mark.parametrize("content, match", [
    ("<graphml><graph><node id='a'/>", "not a readable GraphML"),
    ("not xml at all", "not a readable GraphML"),
])
def test_broken_graphml(tmp_path, content, match):
    f = tmp_path / "bad.graphml"
    f.write_text(content)
    with pytest.raises(TopologyError, match=match):
        load_graphml(f)


def test_missing_file():
    with pytest.raises(TopologyError, match="no such file"):
        load_graphml("/nonexistent/x.graphml")


SND = """<?xml version="1.0"?>
<network xmlns="http://sndlib.zib.de/network" version="1.0"><networkStructure>
<nodes><node id="A"/><node id="B"/></nodes>
<links><link id="L"><source>A</source><target>{t}</target>
<preInstalledModule><capacity>100.0</capacity></preInstalledModule></link></links>
</networkStructure></network>"""


def test_sndlib_errors(tmp_path):
    ok = tmp_path / "ok.xml"
    ok.write_text(SND.format(t="B"))
    t = load_sndlib_network(ok)
    assert t.num_links == 2 and np.all(t.capacity_bps == 100e6)
    bad = tmp_path / "bad.xml"
    bad.write_text(SND.format(t="Z"))
    with pytest.raises(TopologyError, match="unknown node 'Z'"):
        load_sndlib_network(bad)
    broken = tmp_path / "broken.xml"
    broken.write_text(SND.format(t="B")[:120])
    with pytest.raises(TopologyError, match="not well-formed"):
        load_sndlib_network(broken)
    other = tmp_path / "other.xml"
    other.write_text("<foo/>")
    with pytest.raises(TopologyError, match="not an SNDlib network"):
        load_sndlib_network(other)


def test_yaml_topology(tmp_path):
    f = tmp_path / "ring.yaml"
    f.write_text("name: ring\nnodes: [a, b, c]\nlinks:\n"
                 "  - {src: a, dst: b, capacity_bps: 10e6}\n  - {src: b, dst: c, capacity_bps: 10e6}\n"
                 "  - {src: c, dst: a, capacity_bps: 10e6, weight: 3}\n")
    t = load_yaml_topology(f)
    assert t.name == "ring" and t.num_links == 6 and np.all(t.capacity_bps == 10e6)
    assert sorted(t.weight.tolist()) == [1, 1, 1, 1, 3, 3]
    f.write_text("links:\n  - {src: a, dst: b, capacity_bps: fast}\n")
    with pytest.raises(TopologyError, match=r"links\[0\].capacity_bps"):
        load_yaml_topology(f)
    f.write_text("links: [")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_yaml_topology(f)
