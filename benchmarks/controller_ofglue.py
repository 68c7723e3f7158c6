"""The real os-ken app (controller/app.py) driving fake switches at WAN size: how many OpenFlow
messages and bytes an interval sends, and how long the first install takes until every switch has
answered the last barrier. The fake switches record what they receive and answer barriers at once (a
real switch's apply time is not in these numbers; see the Mininet rows for that). The router returns
a dense split over every candidate path that drifts each interval (what a model's output does; drawn
before the clock starts, so model time is excluded).

    TELLM_DATA_DIR=../shared/data nice -n 10 python benchmarks/controller_ofglue.py --topology Cogentco \
        --out benchmarks/results/controller_ofglue.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OSKEN_HUB_TYPE", "native")

import numpy as np
from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from tellm.controller import ofmsgs
from tellm.controller.app import TellmController
from tellm.controller.core import ControllerCore
from tellm.controller.routers import ECMPRouter

from tecore import compute_paths, generate, load_topology

sys.path.insert(0, str(Path(__file__).parent))
from controller_plan import DriftingSplit  # noqa: E402


class CountingDatapath:
    """A switch that counts what it is sent and answers barrier requests at once."""

    def __init__(self, dpid: int, app):
        self.id, self.app = dpid, app
        self.ofproto, self.ofproto_parser = ofp, parser
        self.xid = 0
        self.messages = self.bytes = self.sends = 0
        self.packet_outs: list = []

    def set_xid(self, msg):
        self.xid += 1
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg):
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        if isinstance(msg, parser.OFPBarrierRequest):
            self.app._barrier(SimpleNamespace(msg=SimpleNamespace(datapath=self, xid=msg.xid)))
        elif isinstance(msg, parser.OFPPacketOut):
            self.packet_outs.append(msg)

    def send(self, buf: bytes):
        # Walk the OpenFlow headers: every chunk must hold whole messages.
        view = memoryview(buf)
        off = n = 0
        while off < len(buf):
            off += int.from_bytes(view[off + 2:off + 4], "big")
            n += 1
        if off != len(buf):
            raise AssertionError("a chunk ends inside a message")
        self.messages += n
        self.bytes += len(buf)
        self.sends += 1


def _totals(dps) -> tuple[int, int, int]:
    return (sum(d.messages for d in dps.values()), sum(d.bytes for d in dps.values()),
            sum(d.sends for d in dps.values()))


def run(name: str, k: int, intervals: int, router_name: str) -> dict:
    topo = load_topology(name)
    paths = compute_paths(topo, k=k)
    rng = np.random.default_rng(0)
    router = DriftingSplit(paths, rng, intervals + 1) if router_name == "dense" else ECMPRouter()
    core = ControllerCore(topo, paths, {n: i + 1 for i, n in enumerate(topo.nodes)}, router)
    app = TellmController(core=core, poll_interval_seconds=1.0)
    dps = {d: CountingDatapath(d, app) for d in range(1, topo.num_nodes + 1)}
    for dp in dps.values():
        app._features(SimpleNamespace(msg=SimpleNamespace(datapath=dp)))
    app._do_resync()
    # Ports: 1 = host, 2 + v = towards node v. Port descriptions, then one round of LLDP probes delivered.
    out = {u: sorted(int(topo.dst[lid]) for lid in range(topo.num_links) if topo.src[lid] == u)
           for u in range(topo.num_nodes)}
    for u, dp in enumerate(dps.values()):
        body = [parser.OFPPort(port_no=p, hw_addr=f"00:00:00:{u >> 8:02x}:{u & 255:02x}:{p:02x}", config=0, state=0)
                for p in [1] + [2 + v for v in out[u]]]
        app._port_desc(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=body)))
    for dp in dps.values():
        dp.packet_outs.clear()
        app._send_lldp(dp)
    for u, dp in enumerate(dps.values()):
        for po in dp.packet_outs:
            port = po.actions[0].port
            if port >= 2:
                far = dps[port - 2 + 1]
                msg = parser.OFPPacketIn(far, match=parser.OFPMatch(in_port=2 + u), data=po.data)
                app._packet_in(SimpleNamespace(msg=msg))
        dp.packet_outs.clear()
    if not core.link_up().all():
        raise SystemExit("not every link was discovered")
    tm = generate(topo, "gravity", 1, seed=0)[0].demand_bps
    n = topo.num_nodes

    def counters(t: float):
        drift = rng.uniform(0.95, 1.05, size=(n, n))
        for s, dp in enumerate(dps.values()):
            body = [parser.OFPFlowDesc(cookie=ofmsgs.COOKIE_CLASS | (d + 1),
                                       stats=parser.OFPStats(byte_count=int(tm[s, d] / 8 * t * drift[s, d])))
                    for d in range(n) if d != s]
            app._flow_stats(SimpleNamespace(msg=SimpleNamespace(datapath=dp, body=body)))

    counters(0.0)
    time.sleep(0.01)
    counters(1.0)
    before = _totals(dps)
    t0 = time.perf_counter()
    plan = app.tick()
    first_seconds = time.perf_counter() - t0
    after = _totals(dps)
    fw = core.forwarding_json()
    r = {"topology": topo.name, "nodes": n, "paths": paths.num_paths, "k": k, "router": router_name,
         "first_install_seconds": round(first_seconds, 3), "first_install_operations": plan.num_ops,
         "first_install_messages": after[0] - before[0], "first_install_bytes": after[1] - before[1],
         "first_install_chunks": after[2] - before[2],
         "rules_max_per_switch": fw["max_rules_per_switch"], "rules_bound_per_switch": fw["bound_rules_per_switch"],
         "intervals": []}
    for i in range(intervals):
        time.sleep(0.01)
        counters(2.0 + i)
        before = _totals(dps)
        t0 = time.perf_counter()
        plan = app.tick()
        secs = time.perf_counter() - t0
        after = _totals(dps)
        r["intervals"].append({"seconds": round(secs, 3), "operations": 0 if plan is None else plan.num_ops,
                               "messages": after[0] - before[0], "bytes": after[1] - before[1],
                               "chunks": after[2] - before[2]})
    r["load_average_1min"] = os.getloadavg()[0]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", default="Cogentco")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--intervals", type=int, default=4)
    ap.add_argument("--routers", nargs="+", default=["dense", "ecmp"], choices=["dense", "ecmp"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/controller_ofglue.json"))
    args = ap.parse_args()
    results = []
    for router in args.routers:
        res = run(args.topology, args.k, args.intervals, router)
        print(json.dumps(res))
        results.append(res)
    doc = {"benchmark": "controller_ofglue", "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "cpu_count": os.cpu_count(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
