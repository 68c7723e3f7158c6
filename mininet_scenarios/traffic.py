"""Traffic generator: replays a traffic matrix on a Mininet testbed as many UDP flows per host pair.

One sender process per host multiplexes all its destinations: each destination gets a token bucket
at its demand (bit/s, piecewise constant over a schedule of phases, so bursts are just phases), and
its packets go round-robin over ``flows`` source sockets (distinct source ports), so every pair is
``flows`` distinct 5-tuples of equal rate: what OVS's dp_hash select groups need to split a pair by
weight (the realised share of a bucket is the share of flows hashed to it). One receiver per host
counts packets per (source address, source port). Payloads carry (flow, sequence) so receivers can
count loss per flow against the senders' reports.

Run inside hosts as ``python -m tellm.mininet_scenarios.traffic send|recv ...`` (see ``--help``);
``TrafficRun`` starts and collects them on a ``Testbed``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MAGIC = 0x7E11
HEADER = struct.Struct("!HHI")  # magic, flow index, sequence number
DST_PORT = 5001
SRC_PORT_BASE = 20000
#: Bytes of UDP payload per packet; on the wire (Ethernet + IP + UDP headers) it is WIRE_OVERHEAD more.
PAYLOAD_BYTES = 1000
WIRE_OVERHEAD = 14 + 20 + 8


@dataclass
class Event:
    """Something that happens at ``at_seconds`` after traffic starts.
    kind: 'burst' (multiply the demand of pair src->dst switches by ``factor`` until ``until_seconds``),
    'link_down' / 'link_up' (link between switches src and dst)."""

    kind: str
    at_seconds: float
    src: str
    dst: str
    factor: float = 1.0
    until_seconds: float | None = None

    def label(self) -> str:
        if self.kind == "burst":
            return f"burst {self.src}->{self.dst} x{self.factor:g}"
        return f"{self.kind.replace('_', ' ')} {self.src}-{self.dst}"


@dataclass
class SenderPlan:
    """What one host sends: per destination a piecewise-constant rate (one value per phase)."""

    host: str
    start_epoch: float
    duration_seconds: float
    flows: int
    payload_bytes: int
    dst_ips: list[str]
    phase_starts_seconds: list[float]  # ascending, first is 0
    rates_bps: list[list[float]]  # [phase][destination], wire bit/s
    report: str
    dst_port: int = DST_PORT
    src_port_base: int = SRC_PORT_BASE  # flow f is sent from source port src_port_base + f

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path


def host_rate_schedule(scenario, demand_bps: np.ndarray, events: list[Event], duration_seconds: float
                       ) -> tuple[list[float], dict[str, tuple[list[str], np.ndarray]]]:
    """Per host: destination IPs and their rate in each phase [phases, destinations]. A switch pair's
    demand is shared equally by the M x M host pairs of the two switches."""
    bursts = [e for e in events if e.kind == "burst"]
    cuts = {0.0}
    for e in bursts:
        cuts.add(max(0.0, e.at_seconds))
        cuts.add(e.until_seconds if e.until_seconds is not None else duration_seconds)
    starts = sorted(c for c in cuts if c < duration_seconds)
    n = len(scenario.switches)
    m = scenario.hosts_per_switch
    per_phase = []
    for t in starts:
        d = np.array(demand_bps, dtype=np.float64).copy()
        for e in bursts:
            end = e.until_seconds if e.until_seconds is not None else duration_seconds
            if e.at_seconds <= t < end:
                d[scenario.dpid(e.src) - 1, scenario.dpid(e.dst) - 1] *= e.factor
        per_phase.append(d / (m * m))
    out = {}
    for hname, i, j in scenario.hosts():
        ips, cols = [], []
        for k in range(1, n + 1):
            if k == i:
                continue
            for jj in range(1, m + 1):
                ips.append(scenario.host_ip(k, jj))
                cols.append(k - 1)
        rates = np.array([[ph[i - 1, c] for c in cols] for ph in per_phase]).reshape(len(starts), len(cols))
        keep = rates.max(axis=0) > 0 if rates.size else np.zeros(0, bool)
        out[hname] = ([ip for ip, k in zip(ips, keep) if k], rates[:, keep])
    return starts, out


# ---------------------------------------------------------------------------- processes in hosts
def run_sender(plan: SenderPlan) -> dict:
    """Send until the plan's end; return {dst_ip: [packets sent per flow]}."""
    socks = []
    for f in range(plan.flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        s.bind(("0.0.0.0", plan.src_port_base + f))
        s.setblocking(False)
        socks.append(s)
    n_dst = len(plan.dst_ips)
    wire_bits = (plan.payload_bytes + WIRE_OVERHEAD) * 8
    pad = b"\0" * (plan.payload_bytes - HEADER.size)
    sent = np.zeros((n_dst, plan.flows), dtype=np.int64)
    seq = np.zeros((n_dst, plan.flows), dtype=np.int64)
    next_flow = np.zeros(n_dst, dtype=np.int64)
    credit_bits = np.zeros(n_dst)
    rates = np.asarray(plan.rates_bps, dtype=np.float64).reshape(len(plan.phase_starts_seconds), n_dst)
    starts = np.asarray(plan.phase_starts_seconds)
    addrs = [(ip, plan.dst_port) for ip in plan.dst_ips]
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop and time.time() < plan.start_epoch:
        time.sleep(min(0.05, max(0.0, plan.start_epoch - time.time())))
    t0 = time.monotonic() - max(0.0, time.time() - plan.start_epoch)
    last = t0
    dropped_local = 0
    while not stop:
        now = time.monotonic()
        elapsed = now - t0
        if elapsed >= plan.duration_seconds:
            break
        phase = int(np.searchsorted(starts, elapsed, side="right") - 1)
        r = rates[phase]
        # Bucket depth: at most ~20 ms of traffic (or one packet), so a late wake-up does not
        # turn into a burst bigger than the shapers' buffers.
        credit_bits = np.minimum(credit_bits + r * (now - last), np.maximum(r * 0.02, wire_bits))
        last = now
        for d in np.nonzero(credit_bits >= wire_bits)[0]:
            while credit_bits[d] >= wire_bits:
                f = next_flow[d]
                try:
                    socks[f].sendto(HEADER.pack(MAGIC, int(f), int(seq[d, f]) & 0xFFFFFFFF) + pad, addrs[d])
                    sent[d, f] += 1
                    seq[d, f] += 1
                except BlockingIOError:
                    dropped_local += 1  # socket buffer full: not sent, so not counted as sent
                credit_bits[d] -= wire_bits
                next_flow[d] = (f + 1) % plan.flows
        # Sleep until the next packet is due (bounded so phase changes are picked up).
        need = np.where(r > 0, (wire_bits - credit_bits) / np.maximum(r, 1e-9), np.inf)
        time.sleep(float(np.clip(need.min() if need.size else 0.05, 0.0005, 0.05)))
    result = {"host": plan.host, "payload_bytes": plan.payload_bytes, "not_sent_buffer_full": dropped_local,
              "sent": {ip: sent[k].tolist() for k, ip in enumerate(plan.dst_ips)}}
    Path(plan.report).write_text(json.dumps(result))
    return result


def run_receiver(report: str, flows: int, duration_seconds: float, port: int = DST_PORT) -> dict:
    """Count packets per (source ip, flow) until SIGTERM or ``duration_seconds``; write ``report``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.2)
    counts: dict[str, np.ndarray] = {}
    next_seq: dict[str, np.ndarray] = {}
    # Sequence gaps as they are seen (epoch, source, flow, first missing seq, how many): says when
    # packets went missing; a late (reordered) packet fills a gap and is counted in `late`.
    gaps: list[tuple[float, str, int, int, int]] = []
    late = 0
    bad = 0
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    end = time.monotonic() + duration_seconds
    draining = False
    while True:
        if not draining and (stop or time.monotonic() >= end):
            # Datagrams already in the socket's buffer arrived in time: count them before the report
            # (a receiver starved of CPU can be hundreds behind when it is told to stop), for at most
            # a second should senders still be running.
            draining, end = True, time.monotonic() + 1.0
            s.setblocking(False)
        elif draining and time.monotonic() >= end:
            break
        try:
            data, (ip, _port) = s.recvfrom(2048)
        except (socket.timeout, InterruptedError):
            continue
        except BlockingIOError:
            break
        if len(data) < HEADER.size:
            bad += 1
            continue
        magic, f, seq = HEADER.unpack_from(data)
        if magic != MAGIC or f >= flows:
            bad += 1
            continue
        c = counts.get(ip)
        if c is None:
            c = counts[ip] = np.zeros(flows, dtype=np.int64)
            next_seq[ip] = np.zeros(flows, dtype=np.int64)
        c[f] += 1
        expect = next_seq[ip][f]
        if seq > expect and len(gaps) < 10000:
            gaps.append((time.time(), ip, int(f), int(expect), int(seq - expect)))
        elif seq < expect:
            late += 1
        next_seq[ip][f] = max(expect, seq + 1)
    result = {"received": {ip: c.tolist() for ip, c in counts.items()}, "malformed": bad,
              "late": late, "gaps": gaps}
    Path(report).write_text(json.dumps(result))
    return result


# ---------------------------------------------------------------------------- orchestration
@dataclass
class LossReport:
    sent: int
    received: int
    #: {(src ip, dst ip): (sent, received)}
    per_pair: dict = field(default_factory=dict)
    #: {(src ip, dst ip): [(seconds after traffic start, flow, first missing seq, count)]}: where
    #: a receiver saw sequence numbers skipped (reordered packets that came later also show here).
    gaps: dict = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.sent - self.received


class TrafficRun:
    """Senders and receivers for one TM replay on a running Testbed."""

    def __init__(self, testbed, demand_bps: np.ndarray, duration_seconds: float, workdir: Path,
                 events: list[Event] | None = None, flows: int = 128, payload_bytes: int = PAYLOAD_BYTES,
                 start_delay_seconds: float = 1.0, python: str = sys.executable):
        self.tb = testbed
        self.duration_seconds = float(duration_seconds)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.events = list(events or [])
        self.flows = flows
        self.payload_bytes = payload_bytes
        self.start_delay_seconds = start_delay_seconds
        self.python = python
        self.demand_bps = np.asarray(demand_bps, dtype=np.float64)
        self.procs: list = []
        self.receivers: dict[str, object] = {}
        self.senders: dict[str, object] = {}
        self.start_epoch: float | None = None

    def start(self) -> float:
        """Start receivers, then senders synchronised to a common start; returns the start epoch."""
        sc = self.tb.scenario
        starts, per_host = host_rate_schedule(sc, self.demand_bps, self.events, self.duration_seconds)
        grace = 3.0 + self.start_delay_seconds
        for hname in self.tb.host_names():
            h = self.tb.host(hname)
            p = h.popen([self.python, "-m", "tellm.mininet_scenarios.traffic", "recv",
                         "--report", str(self.workdir / f"recv-{hname}.json"), "--flows", str(self.flows),
                         "--duration", str(self.duration_seconds + grace + 30)],
                        stdout=open(self.workdir / f"recv-{hname}.log", "w"), stderr=subprocess_stdout())
            self.receivers[hname] = p
            self.procs.append(p)
        self.start_epoch = time.time() + self.start_delay_seconds + 1.0
        for hname, (ips, rates) in per_host.items():
            if not ips:
                continue
            plan = SenderPlan(hname, self.start_epoch, self.duration_seconds, self.flows, self.payload_bytes,
                              ips, starts, rates.tolist(), str(self.workdir / f"send-{hname}.json"))
            pf = plan.write(self.workdir / f"plan-{hname}.json")
            p = self.tb.host(hname).popen([self.python, "-m", "tellm.mininet_scenarios.traffic", "send",
                                           "--plan", str(pf)],
                                          stdout=open(self.workdir / f"send-{hname}.log", "w"),
                                          stderr=subprocess_stdout())
            self.senders[hname] = p
            self.procs.append(p)
        return self.start_epoch

    def elapsed(self) -> float:
        return time.time() - self.start_epoch if self.start_epoch else 0.0

    def wait_senders(self, timeout_seconds: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_seconds if timeout_seconds is not None
                                       else self.duration_seconds + 30)
        for hname, p in self.senders.items():
            left = max(0.1, deadline - time.monotonic())
            try:
                p.wait(timeout=left)
            except Exception:
                p.kill()
                raise RuntimeError(f"traffic sender on {hname} did not finish in time") from None
            if p.returncode != 0:
                log = (self.workdir / f"send-{hname}.log").read_text()[-2000:]
                raise RuntimeError(f"traffic sender on {hname} failed (exit {p.returncode}): {log}")

    def stop_receivers(self, drain_seconds: float = 1.0) -> None:
        time.sleep(drain_seconds)  # packets still queued in shapers arrive
        for p in self.receivers.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for hname, p in self.receivers.items():
            try:
                p.wait(timeout=10)
            except Exception:
                p.kill()

    def kill(self) -> None:
        """Stop every process this run started (by pid); safe to call twice."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except Exception:
                pass

    def loss(self) -> LossReport:
        """Sent vs received per pair, from the reports (call after wait_senders + stop_receivers)."""
        received: dict[tuple[str, str], int] = {}
        gaps: dict[tuple[str, str], list] = {}
        for hname in self.receivers:
            dst_ip = self.tb.host(hname).IP()
            f = self.workdir / f"recv-{hname}.json"
            if not f.exists():
                raise RuntimeError(f"receiver on {hname} wrote no report")
            doc = json.loads(f.read_text())
            for src_ip, counts in doc["received"].items():
                received[(src_ip, dst_ip)] = int(sum(counts))
            for t, src_ip, flow, first, n in doc.get("gaps", []):
                gaps.setdefault((src_ip, dst_ip), []).append((t - (self.start_epoch or 0.0), flow, first, n))
        per_pair = {}
        tot_s = tot_r = 0
        for hname in self.senders:
            src_ip = self.tb.host(hname).IP()
            doc = json.loads((self.workdir / f"send-{hname}.json").read_text())
            for dst_ip, counts in doc["sent"].items():
                s = int(sum(counts))
                r = received.get((src_ip, dst_ip), 0)
                per_pair[(src_ip, dst_ip)] = (s, r)
                tot_s += s
                tot_r += r
        return LossReport(tot_s, tot_r, per_pair, gaps)


def subprocess_stdout():
    import subprocess

    return subprocess.STDOUT


# ---------------------------------------------------------------------------- CLI (inside hosts)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tellm.mininet_scenarios.traffic",
                                 description="UDP traffic sender/receiver for tellm's Mininet scenarios "
                                             "(started inside hosts by TrafficRun).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send", help="send per a JSON SenderPlan")
    s.add_argument("--plan", required=True, type=Path)
    r = sub.add_parser("recv", help="count received packets per source and flow")
    r.add_argument("--report", required=True)
    r.add_argument("--flows", type=int, required=True)
    r.add_argument("--duration", type=float, required=True, metavar="SECONDS")
    r.add_argument("--port", type=int, default=DST_PORT, help="UDP port to listen on")
    args = ap.parse_args(argv)
    if args.cmd == "send":
        plan = SenderPlan(**json.loads(args.plan.read_text()))
        run_sender(plan)
    else:
        run_receiver(args.report, args.flows, args.duration, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
