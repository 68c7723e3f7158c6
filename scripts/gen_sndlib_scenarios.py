#!/usr/bin/env python3
"""Write the packaged Abilene and GEANT scenario topologies (mininet_scenarios/{abilene,geant}.yaml)
from the SNDlib network files in ../shared/data, once. The testbed then never needs the data folder.

Capacities are scaled so that the largest SNDlib link becomes --max-rate-mbps (HTB enforces a few
Mbit/s reliably and the userspace datapath forwards only a modest total on a shared 2-core machine);
ratios between links are kept, with a floor of --min-rate-mbps. Latencies are the great-circle
estimates tecore derives from SNDlib coordinates (kept for latency-aware policies; not emulated).

    TELLM_DATA_DIR=../shared/data python scripts/gen_sndlib_scenarios.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tecore import load_topology
from tellm.mininet_scenarios.scenarios import LinkSpec, Scenario

OUT = Path(__file__).resolve().parent.parent / "mininet_scenarios"


def convert(spec: str, name: str, max_rate_mbps: float, min_rate_mbps: float) -> Scenario:
    topo = load_topology(spec)
    scale = max_rate_mbps * 1e6 / float(topo.capacity_bps.max())
    links, seen = [], set()
    for l in range(topo.num_links):
        u, v = int(topo.src[l]), int(topo.dst[l])
        if (v, u) in seen:
            continue
        seen.add((u, v))
        back = topo.link_index.get((v, u))
        cap = float(topo.capacity_bps[l])
        if back is not None and float(topo.capacity_bps[back]) != cap:
            raise SystemExit(f"{spec}: link {u}-{v} has different capacities per direction")
        rate_bps = round(max(min_rate_mbps * 1e6, cap * scale) / 1e4) * 1e4  # 10 kbit/s steps
        links.append(LinkSpec(topo.nodes[u], topo.nodes[v], rate_bps, float(topo.latency_seconds[l])))
    return Scenario(name, f"SNDlib {topo.name}: {topo.num_nodes} nodes, {len(links)} links, capacities x{scale:.3g}",
                    topo.nodes, tuple(links), hosts_per_switch=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-rate-mbps", type=float, default=4.0)
    ap.add_argument("--min-rate-mbps", type=float, default=0.5)
    args = ap.parse_args()
    for spec, name in (("sndlib:abilene", "abilene"), ("sndlib:geant", "geant")):
        sc = convert(spec, name, args.max_rate_mbps, args.min_rate_mbps)
        path = sc.write_yaml(OUT / f"{name}.yaml")
        print(f"{path}: {len(sc.switches)} switches, {len(sc.links)} links, "
              f"rates {sorted({l.rate_bps / 1e6 for l in sc.links})} Mbit/s")


if __name__ == "__main__":
    main()
