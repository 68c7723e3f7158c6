"""The os-ken glue without switches, in the style of Faucet's tests: fake datapaths record (and
serialise, so malformed messages fail here) every OpenFlow 1.5 message the app sends."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("OSKEN_HUB_TYPE", "native")

from os_ken.lib.packet import arp, ethernet, packet
from os_ken.ofproto import ether
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from tellm.controller import ofmsgs
from tellm.controller.app import TellmController
from tellm.controller.core import ControllerCore
from tellm.controller.groups import POP, Bucket
from tellm.controller.planner import Op, OpKind
from tellm.controller.routers import LPRouter

from .controller_fixtures import diamond, diamond_paths


class FakeDatapath:
    """Records messages; answers barriers through ``on_barrier`` like a switch would. Raw bytes (the
    app's bulk-encoded plans) are parsed back into messages, each checked to serialise to the same bytes."""

    def __init__(self, dpid: int, on_barrier=None):
        self.id = dpid
        self.ofproto = ofp
        self.ofproto_parser = parser
        self.sent: list = []
        self._xid = 100
        self.on_barrier = on_barrier

    def set_xid(self, msg):
        self._xid += 1
        msg.set_xid(self._xid)
        return self._xid

    def send_msg(self, msg):
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()  # raises on a malformed message (e.g. a property without type_)
        self.sent.append(msg)
        if isinstance(msg, parser.OFPBarrierRequest) and self.on_barrier:
            self.on_barrier(self, msg.xid)

    def send(self, buf):
        for raw in split_messages(buf):
            msg = parse_message(raw)
            self.send_msg(msg)
            assert bytes(msg.buf) == raw, "a bulk-encoded message differs from its os-ken serialisation"

    def of(self, cls):
        return [m for m in self.sent if isinstance(m, cls)]


def split_messages(buf: bytes) -> list[bytes]:
    """Concatenated OpenFlow messages -> one bytes object each (by the header's length field)."""
    out, off = [], 0
    while off < len(buf):
        n = int.from_bytes(buf[off + 2:off + 4], "big")
        assert n >= 8 and off + n <= len(buf), "truncated OpenFlow message"
        out.append(bytes(buf[off:off + n]))
        off += n
    return out


def parse_message(raw: bytes):
    """One OpenFlow 1.5 message as the os-ken object a switch would decode; group mods are decoded here
    (os-ken 4.2.2 cannot parse its own bucket properties) and rebuilt with os-ken's classes."""
    from os_ken.ofproto.ofproto_parser import header
    from os_ken.ofproto.ofproto_parser import msg as parse_msg

    version, msg_type, msg_len, xid = header(raw)
    dp = SimpleNamespace(ofproto=ofp, ofproto_parser=parser)
    if msg_type == ofp.OFPT_GROUP_MOD:
        g = _decode_group_mod(raw)
        props = [parser.OFPGroupPropExperimenter(type_=ofp.OFPGPT_EXPERIMENTER, experimenter=ofmsgs.NX_EXPERIMENTER_ID,
                                                 exp_type=ofmsgs.NXGPT_SELECTION_METHOD,
                                                 data=ofmsgs.dp_hash_property().data)] if g["properties"] else []
        buckets = [parser.OFPBucket(bucket_id=b["id"], actions=b["actions"],
                                    properties=[parser.OFPGroupBucketPropWeight(type_=ofp.OFPGBPT_WEIGHT,
                                                                                weight=b["weight"])])
                   for b in g["buckets"]]
        msg = parser.OFPGroupMod(dp, command=g["command"], type_=g["type"], group_id=g["group_id"],
                                 buckets=buckets, properties=props)
        msg.set_xid(xid)
        return msg
    return parse_msg(dp, version, msg_type, msg_len, xid, raw)


def _roundtrip(msg):
    """Parse the serialised bytes back as a switch would see them."""
    from os_ken.ofproto.ofproto_parser import header
    from os_ken.ofproto.ofproto_parser import msg as parse_msg

    version, msg_type, msg_len, xid = header(msg.buf)
    return parse_msg(SimpleNamespace(ofproto=ofp, ofproto_parser=parser), version, msg_type, msg_len, xid, msg.buf)


def _decode_group_mod(buf: bytes) -> dict:
    """OpenFlow 1.5 group_mod bytes -> fields (os-ken 4.2.2's own bucket parser mis-slices properties)."""
    import struct

    command, gtype, group_id, bucket_array_len = struct.unpack_from("!HBxIH", buf, 8)
    off, end, buckets = 24, 24 + bucket_array_len, []
    while off < end:
        blen, alen, bucket_id = struct.unpack_from("!HHI", buf, off)
        actions, a = [], off + 8
        while a < off + 8 + alen:
            act = parser.OFPAction.parser(buf, a)
            actions.append(act)
            a += act.len
        props, p = {}, off + 8 + alen
        while p < off + blen:
            ptype, plen = struct.unpack_from("!HH", buf, p)
            if ptype == ofp.OFPGBPT_WEIGHT:
                props["weight"] = struct.unpack_from("!H", buf, p + 4)[0]
            p += plen
        buckets.append({"id": bucket_id, "actions": actions, **props})
        off += blen
    return {"command": command, "type": gtype, "group_id": group_id, "buckets": buckets,
            "properties": bytes(buf[end:])}


def test_group_mod_is_dp_hash_select_with_weights():
    dp = FakeDatapath(1)
    op = Op(OpKind.ADD_GROUP, 1, group_id=9, dest_dpid=4, buckets=(Bucket(20, 2, 192), Bucket(21, 3, 64)))
    dp.send_msg(ofmsgs.op_message(dp, op))
    g = _decode_group_mod(dp.sent[0].buf)
    assert g["type"] == ofp.OFPGT_SELECT and g["group_id"] == 9 and g["command"] == ofp.OFPGC_ADD
    assert [b["weight"] for b in g["buckets"]] == [192, 64]
    labels = [[a for a in b["actions"] if isinstance(a, parser.OFPActionSetField)][0].value for b in g["buckets"]]
    assert labels == [20, 21]
    outs = [[a for a in b["actions"] if isinstance(a, parser.OFPActionOutput)][0].port for b in g["buckets"]]
    assert outs == [2, 3]
    # The Open vSwitch selection-method property: experimenter 0x154d, exp_type 1, "dp_hash".
    assert g["properties"][4:12] == bytes.fromhex("0000154d00000001") and b"dp_hash\0" in g["properties"]


@pytest.mark.parametrize("kind", list(OpKind))
def test_every_op_serialises(kind):
    dp = FakeDatapath(1)
    op = Op(kind, 1, label=40, port=POP if kind is OpKind.ADD_LABEL else 3, group_id=8, dest_dpid=4,
            buckets=(Bucket(40, 3, 256),))
    dp.send_msg(ofmsgs.op_message(dp, op))
    if kind in (OpKind.ADD_GROUP, OpKind.DELETE_GROUP):
        assert _decode_group_mod(dp.sent[0].buf)["group_id"] == 8
        return
    back = _roundtrip(dp.sent[0])
    if kind in (OpKind.ADD_CLASS, OpKind.MODIFY_CLASS):
        assert back.cookie == ofmsgs.COOKIE_CLASS | 4
        assert back.command == (ofp.OFPFC_ADD if kind is OpKind.ADD_CLASS else ofp.OFPFC_MODIFY_STRICT)
    if kind is OpKind.ADD_LABEL:
        assert back.match["mpls_label"] == 40
        assert isinstance(back.instructions[0].actions[0], parser.OFPActionPopMpls)


def test_lldp_roundtrip():
    frame = ofmsgs.lldp_frame(0x2A, 7, "00:00:00:00:00:01")
    assert ofmsgs.parse_lldp(packet.Packet(frame)) == (0x2A, 7)


def _packet_in(dp, port, data):
    msg = parser.OFPPacketIn(dp, match=parser.OFPMatch(in_port=port), data=data)
    return SimpleNamespace(msg=msg)


def _arp_frame(op, src_mac, src_ip, dst_ip, dst_mac="00:00:00:00:00:00"):
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff" if op == arp.ARP_REQUEST else dst_mac, src=src_mac,
                                     ethertype=ether.ETH_TYPE_ARP))
    p.add_protocol(arp.arp(opcode=op, src_mac=src_mac, src_ip=src_ip, dst_mac=dst_mac, dst_ip=dst_ip))
    p.serialize()
    return bytes(p.data)


def test_app_discovers_routes_and_answers_arp():
    topo = diamond()
    paths = diamond_paths(topo)
    core = ControllerCore(topo, paths, {"s1": 1, "s2": 2, "s3": 3, "s4": 4}, LPRouter())
    app = TellmController(core=core, poll_interval_seconds=1.0)

    def barrier(dp, xid):
        app._barrier(SimpleNamespace(msg=SimpleNamespace(datapath=dp, xid=xid)))

    dps = {d: FakeDatapath(d, barrier) for d in (1, 2, 3, 4)}
    for dp in dps.values():
        app._features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    app._do_resync()
    for dp in dps.values():
        assert dp.of(parser.OFPFlowMod)[0].command == ofp.OFPFC_DELETE  # wiped first
        assert dp.of(parser.OFPPortDescStatsRequest)
    # Port descriptions: host ports 1-2, and port 10 + v towards node index v.
    neighbours = {u: [v for (a, v) in topo.link_index if a == u] for u in range(4)}
    for u, dp in enumerate(dps.values()):
        body = [parser.OFPPort(port_no=p, hw_addr=f"00:00:00:00:{u + 1:02x}:{p:02x}", config=0, state=0)
                for p in [1, 2] + [10 + v for v in neighbours[u]]]
        app._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=body)))
    # Deliver each LLDP probe to the far end of its link, as the wires would.
    for u, dp in enumerate(dps.values()):
        for out in dp.of(parser.OFPPacketOut):
            port = out.actions[0].port
            if port >= 10:
                far = dps[port - 10 + 1]
                app._packet_in(_packet_in(far, 10 + u, out.data))
    assert core.link_up().all()
    plan = app.tick()
    assert plan is not None and plan.group_updates == 12
    # Every switch got its labels before any group, and groups before classification rules.
    for dp in dps.values():
        kinds = [("group" if isinstance(m, parser.OFPGroupMod) and m.command == ofp.OFPGC_ADD else
                  "class" if isinstance(m, parser.OFPFlowMod) and m.cookie >> 48 == 0x7E11 else
                  "label" if isinstance(m, parser.OFPFlowMod) and m.cookie >> 48 == 0x7E12 else None)
                 for m in dp.sent]
        kinds = [k for k in kinds if k]
        assert kinds == sorted(kinds, key=["label", "group", "class"].index)
        assert kinds.count("group") == 3 and kinds.count("class") == 3
    # Proxy ARP: h1 asks for an unknown host (asked on edge ports only), then for a known one (answered).
    h1 = ("00:00:0a:00:01:01", "10.0.1.1")
    h4 = ("00:00:0a:00:04:01", "10.0.4.1")
    for dp in dps.values():
        dp.sent.clear()
    app._packet_in(_packet_in(dps[1], 1, _arp_frame(arp.ARP_REQUEST, *h1, h4[1])))
    outs = [(d, m.actions[0].port) for d, dp in dps.items() for m in dp.of(parser.OFPPacketOut)]
    assert outs and all(port in (1, 2) for _, port in outs) and (1, 1) not in outs
    app._packet_in(_packet_in(dps[4], 1, _arp_frame(arp.ARP_REPLY, *h4, h1[1], h1[0])))
    assert core.hosts["10.0.4.1"].dpid == 4
    assert any(isinstance(m, parser.OFPFlowMod) and m.table_id == 1 for m in dps[4].sent)  # delivery rule
    dps[1].sent.clear()
    app._packet_in(_packet_in(dps[1], 1, _arp_frame(arp.ARP_REQUEST, *h1, h4[1])))
    reply = packet.Packet(dps[1].of(parser.OFPPacketOut)[0].data).get_protocol(arp.arp)
    assert reply.opcode == arp.ARP_REPLY and reply.src_mac == h4[0] and reply.dst_ip == h1[1]
    # Counters: classification-rule replies feed the TM; a port going down fails over at once.
    dp1 = dps[1]
    stats = [parser.OFPFlowDesc(cookie=ofmsgs.COOKIE_CLASS | 4, stats=parser.OFPStats(byte_count=b))
             for b in (0,)]
    app._flow_stats(SimpleNamespace(msg=SimpleNamespace(datapath=dp1, body=stats)))
    port_msg = parser.OFPPortStatus(dp1, reason=ofp.OFPPR_MODIFY,
                                    desc=parser.OFPPort(port_no=11, hw_addr="00:00:00:00:01:0b", config=0,
                                                        state=ofp.OFPPS_LINK_DOWN))
    app._port_status(SimpleNamespace(msg=port_msg))
    assert app._failover_pending
    dp1.sent.clear()
    app._failover()
    mods = [m for m in dp1.sent if isinstance(m, parser.OFPGroupMod) and m.command == ofp.OFPGC_ADD]
    assert mods and all(a.port != 11 for m in mods for b in m.buckets for a in b.actions
                        if isinstance(a, parser.OFPActionOutput))
    assert np.isfinite(core.make_snapshot()["mlu"])


# ------------------------------------------------------------------ without a topology file
def _wire_lldp(app, dps, wires):
    """Deliver every LLDP probe the app sent on a wired port to the far end, as the cables would."""
    far = {}
    for a, p, b, q in wires:
        far[(a, p)], far[(b, q)] = (b, q), (a, p)
    for d, dp in dps.items():
        for out in dp.of(parser.OFPPacketOut):
            end = far.get((d, out.actions[0].port))
            if end is not None and end[0] in dps:
                app._packet_in(_packet_in(dps[end[0]], end[1], out.data))


def _port(dpid, no, speed_kbps):
    props = [parser.OFPPortDescPropEthernet(type_=ofp.OFPPDPT_ETHERNET, curr=0, advertised=0, supported=0, peer=0,
                                            curr_speed=speed_kbps, max_speed=0)]
    return parser.OFPPort(port_no=no, hw_addr=f"00:00:00:00:{dpid:02x}:{no:02x}", config=0, state=0,
                          properties=props)


def _join(app, dps, new, wires, speed_kbps):
    """Switches connect and describe their ports (host port 1 and their wired ports)."""
    for d in new:
        app._features(SimpleNamespace(msg=SimpleNamespace(datapath=dps[d])))
    app._do_resync()
    for d in new:
        ports = [1] + [p for a, p, b, q in wires if a == d] + [q for a, p, b, q in wires if b == d]
        body = [_port(d, no, speed_kbps.get((d, no), 0)) for no in ports]
        app._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dps[d], body=body)))


def _discover_until_installed(app, polls=6):
    key = app.core.discovery.installed.key if app.core.discovery.installed else None
    for _ in range(polls):
        app._discover()
        if app._builder is not None:
            app._builder.join(30)
        inst = app.core.discovery.installed
        if inst is not None and inst.key != key:
            return inst
    raise AssertionError("the discovered topology was never installed")


def test_app_without_topology_discovers_routes_and_rebuilds_on_a_new_switch():
    from tellm.controller.discovery import TopologyDiscovery
    from tellm.controller.groups import LABEL_ALT_BASE

    from tecore import compute_paths

    discovery = TopologyDiscovery(7e9, settle_polls=2,
                                  paths_for=lambda t: compute_paths(t, k=2, use_cache=False, workers=1))
    core = ControllerCore(None, None, None, LPRouter(), discovery=discovery)
    app = TellmController(core=core, poll_interval_seconds=1.0)

    def barrier(dp, xid):
        app._barrier(SimpleNamespace(msg=SimpleNamespace(datapath=dp, xid=xid)))

    dps = {d: FakeDatapath(d, barrier) for d in (1, 2, 3, 4, 5)}
    wires = [(1, 12, 2, 11), (1, 13, 3, 11), (2, 14, 4, 12), (3, 14, 4, 13)]
    # s1-s2 and s2-s4 report 1 Gbit/s (kbit/s in the port description); s1-s3 only at one end; s3-s4 none.
    speeds = {(1, 12): 1_000_000, (2, 11): 1_000_000, (2, 14): 1_000_000, (4, 12): 1_000_000, (1, 13): 500_000}
    _join(app, dps, [1, 2, 3, 4], wires, speeds)
    assert all(dp.of(parser.OFPFlowMod)[0].command == ofp.OFPFC_DELETE for d, dp in dps.items() if d != 5)
    # A host is learnt (and answered) before any topology exists.
    app._packet_in(_packet_in(dps[1], 1, _arp_frame(arp.ARP_REQUEST, "00:00:0a:00:01:01", "10.0.1.1", "10.0.4.1")))
    assert core.hosts["10.0.1.1"].dpid == 1
    assert app.tick() is None and core.topo is None  # nothing to route yet
    _wire_lldp(app, dps, wires)
    built = _discover_until_installed(app)
    topo = core.topo
    assert topo.nodes == ("s1", "s2", "s3", "s4") and topo.num_links == 8 and core.link_up().all()
    cap = {topo.link_name(i): topo.capacity_bps[i] for i in range(topo.num_links)}
    assert cap["s1->s2"] == cap["s4->s2"] == 1e9 and cap["s3->s1"] == 5e8 and cap["s3->s4"] == 7e9
    assert sorted(built.defaulted) == ["s3->s4", "s4->s3"]
    for dp in dps.values():
        dp.sent.clear()
    plan = app.tick()
    assert plan is not None and plan.group_updates == 12
    # The groups output on the ports LLDP found: s1 reaches s2 on 12 and s3 on 13.
    outs = {a.port for m in dps[1].of(parser.OFPGroupMod) for b in m.buckets for a in b.actions
            if isinstance(a, parser.OFPActionOutput)}
    assert outs == {12, 13}
    state = core.state_json()
    assert state["discovery"]["settled"] and state["discovery"]["default_capacity_links"] == ["s3->s4", "s4->s3"]
    assert state["router"] == "lp" and len(state["groups"]) == 12
    old_labels = {label for _, label in core.installed.labels}
    # A fifth switch is cabled to s4: discovery settles again, new paths, make-before-break reinstall.
    wires5 = [(4, 15, 5, 14)]
    _join(app, dps, [5], wires5, {})
    # s4 reports its new port (port status ADD), which the app probes at once.
    app._port_status(SimpleNamespace(msg=parser.OFPPortStatus(dps[4], reason=ofp.OFPPR_ADD, desc=_port(4, 15, 0))))
    _wire_lldp(app, dps, wires5)
    for dp in dps.values():
        dp.sent.clear()
    _discover_until_installed(app)
    assert core.topo.num_nodes == 5 and core.label_base == LABEL_ALT_BASE
    plan = app.tick()
    assert plan is not None and plan.group_updates == 20
    for d, dp in dps.items():
        kinds = []
        for m in dp.sent:
            if isinstance(m, parser.OFPFlowMod) and m.cookie >> 48 == 0x7E12:
                assert m.match["mpls_label"] >= LABEL_ALT_BASE  # new labels never reuse an old one
                kinds.append("label")
            elif isinstance(m, parser.OFPGroupMod):
                kinds.append("group" if m.command == ofp.OFPGC_ADD else "del_group")
            elif isinstance(m, parser.OFPFlowMod) and m.cookie >> 48 == 0x7E11:
                kinds.append("class")
            elif isinstance(m, parser.OFPFlowMod) and m.command == ofp.OFPFC_DELETE_STRICT:
                assert m.match["mpls_label"] in old_labels
                kinds.append("del_label")
        order = ["label", "group", "class", "del_group", "del_label"]
        assert kinds == sorted(kinds, key=order.index), (d, kinds)
        if d != 5:
            assert "del_label" in kinds and "del_group" in kinds  # the old state went, after the new
