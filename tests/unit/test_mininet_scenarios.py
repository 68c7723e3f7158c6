"""The testbed's pure parts, without root or switches: scenarios (addressing contract, the YAML the
controller reads, the shipped SNDlib topologies), the traffic schedule, and the UDP sender/receiver
over loopback (real sockets)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tecore import TrafficMatrix, compute_paths, ecmp_link_loads, load_topology, mlu, solve_min_mlu
from tellm.mininet_scenarios import scenarios as S
from tellm.mininet_scenarios.traffic import WIRE_OVERHEAD, Event, SenderPlan, host_rate_schedule


@pytest.mark.parametrize("name", sorted(S.SCENARIOS))
def test_scenario_yaml_is_what_tecore_and_the_controller_read(name, tmp_path):
    sc = S.get(name)
    path = sc.write_yaml(tmp_path / f"{name}.yaml")
    topo = load_topology(str(path))
    assert topo.nodes == sc.switches
    # Capacities are the TCLink rates, both directions.
    rates = {frozenset((l.src, l.dst)): l.rate_bps for l in sc.links}
    for l in range(topo.num_links):
        key = frozenset((topo.nodes[topo.src[l]], topo.nodes[topo.dst[l]]))
        assert topo.capacity_bps[l] == rates[key]
    assert topo.num_links == 2 * len(sc.links)
    import yaml

    doc = yaml.safe_load(path.read_text())
    assert doc["dpids"] == {n: i + 1 for i, n in enumerate(sc.switches)}
    assert doc["hosts_per_switch"] == sc.hosts_per_switch
    again = S.from_yaml(path)
    assert again.switches == sc.switches and again.links == sc.links
    # Rates stay small: the userspace datapath on 2 shared cores (benchmarks/README.md).
    assert max(l.rate_bps for l in sc.links) <= 10e6
    tm = sc.default_tm()
    assert tm.total_bps > 0
    assert 0.3 <= mlu(topo, ecmp_link_loads(topo, tm)) <= 0.9


def test_addressing_contract():
    assert S.Scenario.host_name(3, 2) == "h3x2"
    assert S.Scenario.host_ip(3, 2) == "10.0.3.2"
    assert S.Scenario.host_ip(300, 7) == "10.1.44.7"
    assert S.Scenario.host_mac(300, 7) == "00:00:0a:01:2c:07"
    sc = S.leafspine()
    hosts = sc.hosts()
    assert len(hosts) == len(sc.switches) * 2
    assert hosts[0] == ("h1x1", 1, 1)


def test_sndlib_scenarios_match_sndlib(data_dir):
    """The abilene / geant scenarios keep SNDlib's nodes, links and capacity ratios (scaled)."""
    for name, spec in (("abilene", "sndlib:abilene"), ("geant", "sndlib:geant")):
        ours, ref = S.get(name).topology, load_topology(spec)
        assert set(ours.nodes) == set(ref.nodes)
        theirs = {(ref.nodes[u], ref.nodes[v]): c for u, v, c in zip(ref.src, ref.dst, ref.capacity_bps)}
        mine = {(ours.nodes[u], ours.nodes[v]): c for u, v, c in zip(ours.src, ours.dst, ours.capacity_bps)}
        assert theirs.keys() == mine.keys()
        ratio = np.array([mine[k] / theirs[k] for k in theirs])
        assert np.allclose(ratio, ratio[0], rtol=0.01)


def test_diamond_is_built_so_that_shortest_paths_are_bad():
    sc = S.diamond()
    topo = sc.topology
    tm = sc.default_tm()
    paths = compute_paths(topo, k=4)
    sp = mlu(topo, ecmp_link_loads(topo, tm))
    opt = solve_min_mlu(topo, paths, tm.pair_demands(paths.pairs)).mlu
    assert sp == pytest.approx(0.8)
    assert opt == pytest.approx(0.4, abs=1e-6)


def test_rate_schedule_splits_pairs_over_hosts_and_applies_bursts():
    sc = S.leafspine(hosts=2)
    tm = sc.default_tm()
    events = [Event("burst", 5.0, "leaf1", "leaf2", factor=2.0, until_seconds=8.0),
              Event("link_down", 6.0, "leaf1", "spine1")]
    starts, per_host = host_rate_schedule(sc, tm.demand_bps, events, 10.0)
    assert starts == [0.0, 5.0, 8.0]
    # Phase 0 and 2: every host pair carries 1/4 of its switch pair; totals are the TM's.
    total = [sum(r[p].sum() for _, r in per_host.values()) for p in range(3)]
    assert total[0] == pytest.approx(tm.total_bps)
    assert total[2] == pytest.approx(tm.total_bps)
    i1, i2 = sc.dpid("leaf1") - 1, sc.dpid("leaf2") - 1
    assert total[1] == pytest.approx(tm.total_bps + tm.demand_bps[i1, i2])
    ips, rates = per_host[S.Scenario.host_name(i1 + 1, 1)]
    k = ips.index(S.Scenario.host_ip(i2 + 1, 2))
    assert rates[0, k] == pytest.approx(tm.demand_bps[i1, i2] / 4)
    assert rates[1, k] == pytest.approx(2 * rates[0, k])
    # Spine hosts send nothing in this TM: they get no destinations.
    assert per_host[S.Scenario.host_name(1, 1)][0] == []


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sender_and_receiver_over_loopback(tmp_path):
    """Real processes: the token bucket sends at the asked rate, over every flow, and the receiver
    counts exactly what was sent (loopback loses nothing)."""
    port = _free_udp_port()
    recv_report = tmp_path / "recv.json"
    flows, rate_bps, seconds, payload = 16, 400e3, 3.0, 500
    rp = subprocess.Popen([sys.executable, "-m", "tellm.mininet_scenarios.traffic", "recv", "--report",
                           str(recv_report), "--flows", str(flows), "--duration", "30", "--port", str(port)])
    try:
        time.sleep(1.0)
        base = _free_udp_port()  # a free region is likely around an ephemeral free port; retry if not
        plan = SenderPlan("h", time.time() + 0.3, seconds, flows, payload, ["127.0.0.1"], [0.0, 1.5],
                          [[rate_bps], [2 * rate_bps]], str(tmp_path / "send.json"), dst_port=port,
                          src_port_base=base)
        subprocess.run([sys.executable, "-m", "tellm.mininet_scenarios.traffic", "send", "--plan",
                        str(plan.write(tmp_path / "plan.json"))], check=True, timeout=30)
        time.sleep(0.5)
    finally:
        rp.terminate()
        rp.wait(timeout=10)
    sent = np.array(json.loads((tmp_path / "send.json").read_text())["sent"]["127.0.0.1"])
    got = np.array(json.loads(recv_report.read_text())["received"]["127.0.0.1"])
    expected_pkts = (1.5 * rate_bps + 1.5 * 2 * rate_bps) / ((payload + WIRE_OVERHEAD) * 8)
    assert sent.sum() == pytest.approx(expected_pkts, rel=0.1)
    assert (sent > 0).all() and sent.max() - sent.min() <= 1  # round robin over the flows
    assert (got == sent).all()


def test_unknown_scenario_is_a_clear_error():
    with pytest.raises(S.ScenarioError, match="known: diamond"):
        S.get("nope")


def test_demo_cli_lists_every_scenario():
    from tellm.commands.demo import SCENARIO_NAMES

    assert sorted(SCENARIO_NAMES) == sorted(S.SCENARIOS)


def test_sndlib_scenarios_need_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TELLM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("tecore.loaders.data_dirs", lambda: [tmp_path])
    with pytest.raises(S.ScenarioError, match="TELLM_DATA_DIR"):
        S.get("abilene")


def test_demo_traffic_sources(data_dir):
    from tecore import ecmp_link_loads, mlu
    from tellm.mininet_scenarios.schedule import traffic_matrix

    sc = S.get("abilene")
    for src in ("scenario", "gravity", "bimodal"):
        tm = traffic_matrix(sc, src, seed=2, load=0.5)
        assert mlu(sc.topology, ecmp_link_loads(sc.topology, tm)) == pytest.approx(0.5)
    with pytest.raises(S.ScenarioError, match="choose scenario"):
        traffic_matrix(sc, "nope", 0, None)


def test_demo_replays_real_sndlib_matrices(data_dir, monkeypatch):
    from tecore import ecmp_link_loads, mlu
    from tellm.mininet_scenarios.schedule import traffic_matrix

    monkeypatch.setenv("TELLM_DATA_DIR", str(data_dir))
    for name in ("abilene", "geant"):
        sc = S.get(name)
        tm = traffic_matrix(sc, "sndlib", 0, None)
        assert tm.label[:4] in ("2004", "2005")  # an SNDlib timestamp
        assert mlu(sc.topology, ecmp_link_loads(sc.topology, tm)) == pytest.approx(sc.load)


def test_a_stopped_receiver_counts_what_already_reached_its_socket(tmp_path):
    """A receiver that falls behind (here: frozen with SIGSTOP) and is then told to stop still counts the
    datagrams waiting in its socket buffer: they arrived in time, only the reader was late."""
    import signal

    from tellm.mininet_scenarios.traffic import HEADER, MAGIC

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = tmp_path / "recv.json"
    p = subprocess.Popen([sys.executable, "-m", "tellm.mininet_scenarios.traffic", "recv", "--report", str(report),
                          "--flows", "2", "--duration", "60", "--port", str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:  # bound once our own bind on the port fails
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("0.0.0.0", port))
                except OSError:
                    break
            assert time.monotonic() < deadline, "the receiver never bound its port"
            time.sleep(0.05)
        p.send_signal(signal.SIGSTOP)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for seq in range(300):
                tx.sendto(HEADER.pack(MAGIC, seq % 2, seq // 2) + b"\0" * 64, ("127.0.0.1", port))
        p.send_signal(signal.SIGTERM)
        p.send_signal(signal.SIGCONT)
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
    doc = json.loads(report.read_text())
    assert sum(sum(c) for c in doc["received"].values()) == 300 and not doc["gaps"]
