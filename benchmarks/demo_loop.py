"""Collect the control-loop figures of `tellm demo` runs into one benchmark JSON.

`tellm demo` writes summary.json with, per phase, a ``loop`` section (mininet_scenarios/loopcheck.py:
realisation of predicted link loads, interval periods and overruns, OpenFlow messages per interval,
routing latency and age, all-pairs ping) and the MLU figures. This keeps those (not the per-second
samples) with a label, the commit and the machine's load, so a run is recorded as run.

    python benchmarks/demo_loop.py --summary tellm-demo/summary.json --label defaults \
        --command "tellm demo --scenario garr --routers model" --load-average 13.4 \
        --append --out benchmarks/results/garr_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", type=Path, required=True, help="a tellm demo summary.json")
    ap.add_argument("--label", required=True, help="what this run is (e.g. its controller flags)")
    ap.add_argument("--command", required=True, help="the tellm demo command line that made it")
    ap.add_argument("--load-average", type=float, required=True, help="1-minute load average at the start")
    ap.add_argument("--commit", default=None, help="commit of the code that ran (default: HEAD)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    args = ap.parse_args()
    summary = json.loads(args.summary.read_text())
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True, check=True).stdout.strip()
    phases = {r: {k: v for k, v in p.items() if k not in ("samples",)} for r, p in summary["phases"].items()}
    run = {"label": args.label, "command": args.command, "commit": commit, "cpu_count": os.cpu_count(),
           "load_average_1min_at_start": args.load_average, "scenario": summary["scenario"],
           "tm_total_bps": summary["tm_total_bps"], "duration_seconds": summary["duration_seconds"],
           "events": summary["events"], "phases": phases}
    runs = json.loads(args.out.read_text())["runs"] if args.append and args.out.exists() else []
    args.out.write_text(json.dumps({"runs": runs + [run]}, indent=1) + "\n")
    print(f"wrote {args.out} ({len(runs) + 1} run(s))")


if __name__ == "__main__":
    main()
