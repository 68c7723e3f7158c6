"""Reading Open vSwitch state back with ``ovs-ofctl`` (OpenFlow 1.5): what the switches really hold,
to compare with what the controller says it installed."""

from __future__ import annotations

import re
import subprocess


def ofctl(*args: str) -> str:
    """``ovs-ofctl -O OpenFlow15 ARGS``; its stdout (raises CalledProcessError on failure)."""
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow15", *args], check=True, capture_output=True,
                          text=True).stdout


def parse_groups(dump: str) -> dict[int, list[dict]]:
    """{group_id: [{"bucket_id", "weight", "label", "port"}]} of the select groups in `dump-groups`."""
    out = {}
    for line in dump.splitlines():
        m = re.search(r"group_id=(\d+),type=select", line)
        if not m:
            continue
        buckets = []
        for b in re.finditer(r"bucket=bucket_id:(\d+),weight:(\d+),actions=([^ ]*?)(?=,bucket=|$| )", line):
            actions = b.group(3)
            label = re.search(r"set_field:(\d+)->mpls_label", actions)
            port = re.search(r"output:(\d+)", actions)
            buckets.append({"bucket_id": int(b.group(1)), "weight": int(b.group(2)),
                            "label": int(label.group(1)) if label else None,
                            "port": int(port.group(1)) if port else None})
        out[int(m.group(1))] = buckets
    return out


def parse_group_stats(dump: str) -> dict[int, list[int]]:
    """{group_id: [byte_count of each bucket]} from `dump-group-stats`."""
    out = {}
    for line in dump.splitlines():
        m = re.search(r"group_id=(\d+)", line)
        if not m:
            continue
        out[int(m.group(1))] = [int(x) for x in re.findall(r"bucket\d+:packet_count=\d+,byte_count=(\d+)", line)]
    return out
