"""OpenFlow 1.5 messages for planner Ops and the controller's fixed rules (os-ken parser objects).

Pipeline on every switch:
- table 0, priority 300: LLDP -> controller (link discovery);
- table 0, priority 200: ARP -> controller (proxy ARP; switches never flood, the topology has cycles);
- table 0, priority 150: ``mpls_label == L`` -> transit: output(port); egress: pop MPLS, goto table 1;
- table 0, priority 120: IPv4 to this switch's own host subnet -> goto table 1;
- table 0, priority 100: IPv4 to switch d's subnet -> group (the TE split); cookie carries d, and the
  rule's byte counter is the TM entry (this switch -> d);
- table 0, priority 0: -> controller (learn hosts from their first packet);
- table 1, priority 100: ``ipv4_dst == host`` -> output(host port); miss: drop.
Select groups use the Open vSwitch ``dp_hash`` selection method (OpenFlow 1.3 select groups do not
split traffic on this userspace datapath; see shared/notes/openflow-on-this-machine.md).
"""

from __future__ import annotations

import struct

from os_ken.lib.packet import ethernet, lldp, packet
from os_ken.ofproto import ether
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser

from .addressing import host_subnet
from .groups import POP
from .planner import Op, OpKind

COOKIE_MASK = 0xFFFF << 48
COOKIE_CLASS = 0x7E11 << 48
COOKIE_LABEL = 0x7E12 << 48
COOKIE_HOST = 0x7E13 << 48
COOKIE_BASE = 0x7E10 << 48

PRIO_LLDP, PRIO_ARP, PRIO_LABEL, PRIO_LOCAL, PRIO_CLASS, PRIO_MISS = 300, 200, 150, 120, 100, 0
TABLE_HOSTS = 1
#: Open vSwitch experimenter id and its "selection method" group property.
NX_EXPERIMENTER_ID = 0x0000154D
NXGPT_SELECTION_METHOD = 1


def _flow(dp, table_id, priority, match, instructions, cookie, command=ofp.OFPFC_ADD):
    return parser.OFPFlowMod(dp, cookie=cookie, cookie_mask=0, table_id=table_id, command=command,
                             priority=priority, match=match, instructions=instructions,
                             buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)


def _apply(actions):
    return parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)


def _to_controller():
    return [_apply([parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])]


def dp_hash_property():
    """The group property that selects OVS's ``dp_hash`` method (payload: pad, name[16], param u64)."""
    payload = b"\0" * 4 + b"dp_hash".ljust(16, b"\0") + struct.pack("!Q", 0)
    words = list(struct.unpack(f"!{len(payload) // 4}I", payload))
    return parser.OFPGroupPropExperimenter(type_=ofp.OFPGPT_EXPERIMENTER, experimenter=NX_EXPERIMENTER_ID,
                                           exp_type=NXGPT_SELECTION_METHOD, data=words)


def wipe(dp) -> list:
    """Delete every flow and group (a reconnecting switch starts from a known state)."""
    return [parser.OFPFlowMod(dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY,
                              out_group=ofp.OFPG_ANY, match=parser.OFPMatch()),
            parser.OFPGroupMod(dp, command=ofp.OFPGC_DELETE, group_id=ofp.OFPG_ALL)]


def base_flows(dp, dpid: int) -> list:
    net, mask = host_subnet(dpid)
    return [
        _flow(dp, 0, PRIO_LLDP, parser.OFPMatch(eth_type=ether.ETH_TYPE_LLDP), _to_controller(), COOKIE_BASE),
        _flow(dp, 0, PRIO_ARP, parser.OFPMatch(eth_type=ether.ETH_TYPE_ARP), _to_controller(), COOKIE_BASE),
        _flow(dp, 0, PRIO_LOCAL, parser.OFPMatch(eth_type=ether.ETH_TYPE_IP, ipv4_dst=(net, mask)),
              [parser.OFPInstructionGotoTable(TABLE_HOSTS)], COOKIE_BASE),
        _flow(dp, 0, PRIO_MISS, parser.OFPMatch(), _to_controller(), COOKIE_BASE),
    ]


def host_flow(dp, ip: str, port: int) -> object:
    return _flow(dp, TABLE_HOSTS, 100, parser.OFPMatch(eth_type=ether.ETH_TYPE_IP, ipv4_dst=ip),
                 [_apply([parser.OFPActionOutput(port)])], COOKIE_HOST)


def _label_match(label: int):
    return parser.OFPMatch(eth_type=ether.ETH_TYPE_MPLS, mpls_label=label)


def _class_match(dest_dpid: int):
    net, mask = host_subnet(dest_dpid)
    return parser.OFPMatch(eth_type=ether.ETH_TYPE_IP, ipv4_dst=(net, mask))


def op_message(dp, op: Op):
    """The OpenFlow message that performs one planner operation."""
    k = op.kind
    if k in (OpKind.ADD_LABEL, OpKind.MODIFY_LABEL):
        if op.port == POP:
            inst = [_apply([parser.OFPActionPopMpls(ether.ETH_TYPE_IP)]), parser.OFPInstructionGotoTable(TABLE_HOSTS)]
        else:
            inst = [_apply([parser.OFPActionOutput(op.port)])]
        cmd = ofp.OFPFC_ADD if k is OpKind.ADD_LABEL else ofp.OFPFC_MODIFY_STRICT
        return _flow(dp, 0, PRIO_LABEL, _label_match(op.label), inst, COOKIE_LABEL | op.label, cmd)
    if k is OpKind.DELETE_LABEL:
        return parser.OFPFlowMod(dp, table_id=0, command=ofp.OFPFC_DELETE_STRICT, priority=PRIO_LABEL,
                                 match=_label_match(op.label), out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)
    if k is OpKind.ADD_GROUP:
        buckets = [parser.OFPBucket(
            bucket_id=i,
            actions=[parser.OFPActionPushMpls(ether.ETH_TYPE_MPLS),
                     parser.OFPActionSetField(mpls_label=b.label),
                     parser.OFPActionOutput(b.port)],
            properties=[parser.OFPGroupBucketPropWeight(type_=ofp.OFPGBPT_WEIGHT, weight=b.weight)])
            for i, b in enumerate(op.buckets)]
        return parser.OFPGroupMod(dp, command=ofp.OFPGC_ADD, type_=ofp.OFPGT_SELECT, group_id=op.group_id,
                                  buckets=buckets, properties=[dp_hash_property()])
    if k is OpKind.DELETE_GROUP:
        return parser.OFPGroupMod(dp, command=ofp.OFPGC_DELETE, type_=ofp.OFPGT_SELECT, group_id=op.group_id)
    if k in (OpKind.ADD_CLASS, OpKind.MODIFY_CLASS):
        # MODIFY_STRICT keeps the rule's byte counter: the TM estimate is not disturbed by reroutes.
        cmd = ofp.OFPFC_ADD if k is OpKind.ADD_CLASS else ofp.OFPFC_MODIFY_STRICT
        return _flow(dp, 0, PRIO_CLASS, _class_match(op.dest_dpid), [_apply([parser.OFPActionGroup(op.group_id)])],
                     COOKIE_CLASS | op.dest_dpid, cmd)
    if k is OpKind.DELETE_CLASS:
        return parser.OFPFlowMod(dp, table_id=0, command=ofp.OFPFC_DELETE_STRICT, priority=PRIO_CLASS,
                                 match=_class_match(op.dest_dpid), out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY)
    raise ValueError(f"unknown op {k}")


def class_stats_request(dp):
    # OFPMP_FLOW_DESC (flows with their counters): Open vSwitch rejects OpenFlow 1.5's OFPMP_FLOW_STATS.
    return parser.OFPFlowDescStatsRequest(dp, table_id=0, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                                      cookie=COOKIE_CLASS, cookie_mask=COOKIE_MASK, match=parser.OFPMatch())


def group_stats_request(dp):
    return parser.OFPGroupStatsRequest(dp, 0, ofp.OFPG_ALL)


def port_stats_request(dp):
    return parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY)


def lldp_frame(dpid: int, port: int, hw_addr: str) -> bytes:
    """An LLDP probe naming (dpid, port); read back by parse_lldp on the far switch."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=lldp.LLDP_MAC_NEAREST_BRIDGE, src=hw_addr,
                                       ethertype=ether.ETH_TYPE_LLDP))
    pkt.add_protocol(lldp.lldp([
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED, chassis_id=b"dpid:%x" % dpid),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=struct.pack("!I", port)),
        lldp.TTL(ttl=120), lldp.End()]))
    pkt.serialize()
    return bytes(pkt.data)


def parse_lldp(pkt) -> tuple[int, int] | None:
    """(dpid, port) from one of our probes, else None."""
    msg = pkt.get_protocol(lldp.lldp)
    if msg is None or len(msg.tlvs) < 2:
        return None
    chassis, port = msg.tlvs[0], msg.tlvs[1]
    cid = getattr(chassis, "chassis_id", b"")
    if not cid.startswith(b"dpid:") or len(getattr(port, "port_id", b"")) != 4:
        return None
    return int(cid[5:], 16), struct.unpack("!I", port.port_id)[0]


def packet_out(dp, port: int, data: bytes, in_port: int = ofp.OFPP_CONTROLLER):
    return parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, match=parser.OFPMatch(in_port=in_port),
                               actions=[parser.OFPActionOutput(port)], data=data)
