"""Traffic matrix generators and the SNDlib demand reader."""

from __future__ import annotations

import numpy as np
import pytest

from tecore import TrafficError, TrafficMatrix, ecmp_mlu, generate, load_topology, read_sndlib_demands, scale_to_mlu
from tecore.traffic import GENERATORS, find_sndlib_demands

from .test_paths import grid


@pytest.mark.parametrize("family", sorted(GENERATORS))
def test_generators_are_seeded_and_valid(family):
    t = grid(3)
    a = generate(t, family, 3, seed=7)
    b = generate(t, family, 3, seed=7)
    c = generate(t, family, 3, seed=8)
    for x, y in zip(a, b):
        assert np.array_equal(x.demand_bps, y.demand_bps)
    assert not np.array_equal(a[0].demand_bps, c[0].demand_bps)
    for tm in a:
        d = tm.demand_bps
        assert np.all(d >= 0) and np.all(np.diag(d) == 0)
        assert tm.total_bps == pytest.approx(0.1 * t.capacity_bps.sum())
    assert a[0].label == f"{family}#0"


def test_family_shapes_differ_as_designed():
    t = grid(4)
    bim = generate(t, "bimodal", 1, seed=1)[0].demand_bps
    off = bim[~np.eye(t.num_nodes, dtype=bool)]
    assert off.max() / np.median(off) > 4  # elephants stand out
    hot = generate(t, "hotspot", 1, seed=1)[0].demand_bps
    out_share = np.sort(hot.sum(axis=1))[::-1] / hot.sum()
    assert out_share[0] > 2.0 / t.num_nodes


def test_scale_to_mlu_hits_target():
    t = grid(3)
    tm = scale_to_mlu(t, generate(t, "gravity", 1, seed=3)[0], 0.7)
    assert ecmp_mlu(t, tm) == pytest.approx(0.7)


def test_bad_inputs():
    with pytest.raises(TrafficError, match="square"):
        TrafficMatrix(np.zeros((2, 3)))
    with pytest.raises(TrafficError, match="finite"):
        TrafficMatrix(np.array([[0, -1.0], [0, 0]]))
    with pytest.raises(TrafficError, match="unknown TM family"):
        generate(grid(2), "nope", 1)


def test_demand_xml_errors(tmp_path):
    t = load_topology_from_yaml(tmp_path)
    f = tmp_path / "d.xml"
    f.write_text('<network xmlns="http://sndlib.zib.de/network"><meta><unit>MBITPERSEC</unit></meta>'
                 '<demands><demand id="x"><source>a</source><target>b</target>'
                 '<demandValue> 2.5 </demandValue></demand></demands></network>')
    (tm,) = list(read_sndlib_demands(f, t))
    assert tm.demand_bps[t.node_index["a"], t.node_index["b"]] == 2.5e6
    f.write_text(f.read_text().replace("<target>b", "<target>zz"))
    with pytest.raises(TrafficError, match="not in the topology"):
        list(read_sndlib_demands(f, t))
    f.write_text("<network")
    with pytest.raises(TrafficError, match="not well-formed"):
        list(read_sndlib_demands(f, t))


def load_topology_from_yaml(tmp_path):
    y = tmp_path / "ab.yaml"
    y.write_text("nodes: [a, b]\nlinks:\n  - {src: a, dst: b}\n")
    return load_topology(y)


@pytest.mark.data
def test_real_sndlib_geant_series(data_dir):
    t = load_topology("geant")
    archive = find_sndlib_demands("geant")
    assert archive is not None
    tms = list(read_sndlib_demands(archive, t, limit=5))
    assert len(tms) == 5
    assert [tm.label for tm in tms] == sorted(tm.label for tm in tms)  # time order
    assert all(tm.total_bps > 1e9 for tm in tms)  # real GEANT totals are tens of Gbit/s
