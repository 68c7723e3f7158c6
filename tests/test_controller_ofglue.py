"""The os-ken glue without switches, in the style of Faucet's tests: fake datapaths record (and
serialise, so malformed messages fail here) every OpenFlow 1.5 message the app sends."""

from __future__ import annotations

import os
import sys
from pathlib import Path
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

sys.path.insert(0, str(Path(__file__).parent))  # works with and without tests/__init__.py
from controller_fixtures import diamond, diamond_paths


class FakeDatapath:
    """Records messages; answers barriers through ``on_barrier`` like a switch would."""

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

    def of(self, cls):
        return [m for m in self.sent if isinstance(m, cls)]


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
