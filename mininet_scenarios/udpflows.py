"""A steady many-flow UDP sender: one socket per source port, equal bytes per flow, paced to a rate.

For checks that need a known offered load split over many 5-tuples (dp_hash select groups split by
flow) without the full TM replay of ``traffic.py``: nothing listens, the switches' counters measure it.
Run inside a Mininet host with ``start_udp`` (or ``python -m tellm.mininet_scenarios.udpflows --help``);
it prints the number of packets sent when done.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

PAYLOAD_BYTES = 1000
#: The discard port: nothing needs to answer.
DST_PORT = 9
FIRST_SRC_PORT = 20000


def send(dst_ip: str, rate_bps: float, seconds: float, flows: int, first_port: int = FIRST_SRC_PORT,
         payload_bytes: int = PAYLOAD_BYTES) -> int:
    """Send ``rate_bps`` of UDP payload to ``dst_ip`` for ``seconds``, round robin over ``flows`` source
    ports from ``first_port``; returns the packets sent."""
    socks = []
    for i in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("", first_port + i))
        socks.append(s)
    payload = b"x" * payload_bytes
    interval = payload_bytes * 8 / rate_bps
    t0 = time.monotonic()
    n = 0
    try:
        while True:
            el = time.monotonic() - t0
            if el >= seconds:
                break
            due = int(el / interval)
            while n < due:
                try:
                    socks[n % flows].sendto(payload, (dst_ip, DST_PORT))
                except OSError:
                    pass
                n += 1
            time.sleep(0.002)
    finally:
        for s in socks:
            s.close()
    return n


def start_udp(host, dst_ip: str, rate_bps: float, seconds: float, flows: int, first_port: int = FIRST_SRC_PORT):
    """Start the sender inside Mininet host ``host``; returns its Popen (it exits after ``seconds``)."""
    return host.popen([sys.executable, "-m", "tellm.mininet_scenarios.udpflows", dst_ip, str(rate_bps),
                       str(seconds), str(flows), "--first-port", str(first_port)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tellm.mininet_scenarios.udpflows", description=__doc__.splitlines()[0])
    ap.add_argument("dst_ip")
    ap.add_argument("rate_bps", type=float, help="UDP payload bit/s, all flows together")
    ap.add_argument("seconds", type=float)
    ap.add_argument("flows", type=int, help="source ports (distinct 5-tuples)")
    ap.add_argument("--first-port", type=int, default=FIRST_SRC_PORT, help="first source port")
    a = ap.parse_args(argv)
    if a.rate_bps <= 0 or a.flows < 1:
        ap.error("rate_bps must be > 0 and flows >= 1")
    print(send(a.dst_ip, a.rate_bps, a.seconds, a.flows, a.first_port), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
