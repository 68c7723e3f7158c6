#!/usr/bin/env python3
"""What the Open vSwitch userspace datapath forwards on this machine, to size the Mininet scenarios.

A chain of --hops switches (links shaped at 1 Gbit/s, i.e. not the bottleneck), one host at each end,
plain IP flows installed with ovs-ofctl (no controller). iperf3 sends UDP (1000-byte payloads,
--streams parallel flows) at each offered rate for --seconds; the receiver's delivered rate and loss
are recorded. Run as root, with nothing else using Mininet (it takes /tmp/tellm-mininet.lock).

    nice -n 10 python benchmarks/bench_mininet_datapath.py --json benchmarks/results/mininet_datapath.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from tellm.mininet_scenarios.net import Testbed, mininet_lock
from tellm.mininet_scenarios.scenarios import LinkSpec, Scenario


def chain(hops: int) -> Scenario:
    sw = tuple(f"c{i}" for i in range(1, hops + 1))
    links = tuple(LinkSpec(a, b, 1000e6) for a, b in zip(sw, sw[1:]))
    return Scenario(f"chain{hops}", f"{hops} switches in a line", sw, links, hosts_per_switch=1)


def measure(tb: Testbed, offered_mbps: float, seconds: float, streams: int) -> dict:
    n = len(tb.scenario.switches)
    src, dst = tb.host(Scenario.host_name(1, 1)), tb.host(Scenario.host_name(n, 1))
    server = dst.popen(["iperf3", "-s", "-1", "-p", "5299", "-J"])
    time.sleep(0.5)
    try:
        client = src.popen(["iperf3", "-c", dst.IP(), "-p", "5299", "-u", "-l", "1000", "-P", str(streams),
                            "-b", f"{offered_mbps / streams:.3f}M", "-t", str(seconds), "-J"])
        client.communicate(timeout=seconds + 30)
        out, _ = server.communicate(timeout=30)
    finally:
        for p in (server,):
            if p.poll() is None:
                p.kill()
    doc = json.loads(out)
    s, rcv = doc["end"]["sum"], doc["end"]["sum_received"]
    # Rates are UDP payload bit/s (what iperf3 -b sets and reports).
    return {"offered_mbps": offered_mbps, "delivered_mbps": rcv["bits_per_second"] / 1e6,
            "lost_percent": s.get("lost_percent", 0.0), "packets": rcv.get("packets", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hops", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--rates", type=float, nargs="+", default=[10, 25, 50, 100, 200], metavar="MBPS")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with mininet_lock(timeout_seconds=1200):
        for hops in args.hops:
            tb = Testbed.start(chain(hops), of_port=None, static_routes=True, static_arp=True,
                               host_link_mbps=1000)
            try:
                for r in args.rates:
                    row = {"switches": hops, **measure(tb, r, args.seconds, args.streams)}
                    print(f"{hops} switch(es): offered {r:6.1f} Mbit/s -> delivered {row['delivered_mbps']:6.1f} "
                          f"Mbit/s, loss {row['lost_percent']:.2f}%", flush=True)
                    rows.append(row)
            finally:
                tb.stop()
    doc = {"benchmark": "mininet_datapath", "machine": {"cpus": __import__("os").cpu_count(),
                                                        "platform": platform.platform()},
           "payload_bytes": 1000, "streams": args.streams, "seconds": args.seconds,
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
