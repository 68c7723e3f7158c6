"""Manual smoke test of a running compose stack (not part of the test suite; see docs/deployment.md).

Builds the Mininet network of deploy/topology-example.yaml on this host, connects it to the
controller container (127.0.0.1:6653), sends UDP traffic, then evaluates every dashboard query
through the compose Prometheus and prints which return data. Run as root from the repository root,
with the stack up:  python scripts/compose_smoke.py [--prometheus http://127.0.0.1:9090]
Event-driven panels (fallbacks, errors, model reloads, policy) are empty in a healthy stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tellm.mininet_scenarios.net import Testbed, ensure_ovs, mininet_lock  # noqa: E402
from tellm.mininet_scenarios.scenarios import from_yaml  # noqa: E402
from tellm.mininet_scenarios.udpflows import start_udp  # noqa: E402
from tests._observability import dashboard_queries, substitute_grafana_macros  # noqa: E402

TOPOLOGY = ROOT / "deploy" / "topology-example.yaml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--of-port", type=int, default=6653)
    ap.add_argument("--seconds", type=float, default=35, help="traffic before querying (rate windows fill)")
    args = ap.parse_args()

    def query(expr: str, start: float | None = None) -> list:
        params = {"query": expr}
        path = "query"
        if start is not None:
            path, params = "query_range", {**params, "start": start, "end": time.time(), "step": 1}
        url = f"{args.prometheus}/api/v1/{path}?" + urllib.parse.urlencode(params)
        return json.loads(urllib.request.urlopen(url, timeout=10).read())["data"]["result"]  # noqa: S310

    t0 = time.time()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mininet_lock(timeout_seconds=300))
        ensure_ovs()
        testbed = Testbed.start(from_yaml(TOPOLOGY), of_port=args.of_port)
        stack.callback(testbed.stop)
        hosts = [testbed.host(name) for name in testbed.host_names()]
        for a in hosts:
            for b in hosts:
                if a is not b:
                    a.cmd(f"ping -c1 -W1 {b.IP()}")
        for src, rate_bps in ((hosts[0], 8e6), (hosts[1], 4e6)):
            p = start_udp(src, hosts[2].IP(), rate_bps, 3600, 32)
            stack.callback(lambda p=p: (p.kill(), p.wait()))
        time.sleep(args.seconds)
        empty = 0
        for q in dashboard_queries():
            expr = substitute_grafana_macros(q.expr, "20s", "10s")  # compose scrapes every 5 s
            result = query(expr, t0 - 120 if q.annotation else None)
            values = [s["value"][1] for s in result if "value" in s] + \
                     [v[1] for s in result for v in s.get("values", [])]
            ok = any(math.isfinite(float(v)) for v in values)
            empty += not ok
            print(f"{'data ' if ok else 'EMPTY'} {q.id}")
        for expr in ("up", "tellm_mlu_ratio", "tellm_shortest_path_mlu_ratio", "tellm_routing_info == 1"):
            print(expr, [(s["metric"].get("router") or s["metric"].get("job"), s["value"][1]) for s in query(expr)])
        print(f"{empty} queries without data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
