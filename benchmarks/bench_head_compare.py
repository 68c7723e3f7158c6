#!/usr/bin/env python3
"""Two TE heads on the held-out TMs of a `bench_model.py` run, scored against that run's exact optima.

    python benchmarks/bench_head_compare.py --reference benchmarks/results/model.json \\
        --head v2=inference/models/tellm-te.onnx --head new=runs/new.onnx \\
        --out benchmarks/results/head_compare.json

The exact optimum over all paths does not depend on the candidate paths, so the reference file's
``mlu_opt`` of each TM (same topology, TM source, count and seed) is reused and only the heads run:
both on today's default candidate paths, alternately, on ONNX Runtime CPU. Per topology: each head's
model/optimum geo-mean and worst, and whether every split is valid. Topologies whose reference rows
have no optimum (Kdl) are skipped. Cheap: no LP is solved.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench_model import DEFAULT_CASES, geomean, tms_for


def valid_split(split: np.ndarray, pair_ptr: np.ndarray) -> bool:
    sums = np.add.reduceat(split, pair_ptr[:-1])
    return bool(np.all(np.isfinite(split)) and split.min() >= -1e-6 and np.abs(sums - 1).max() < 1e-4)


def compare(reference: dict, heads: dict, only: list[str] | None) -> dict:
    from tecore import compute_paths, load_topology, split_mlu
    from tellm.contract.onnx_io import onnx_inputs

    seed = int(reference.get("seed", 1000))
    out = {}
    for name, source, count in DEFAULT_CASES:
        ref_rows = reference["rows"].get(name, [])
        if (only and name not in only) or not ref_rows or "mlu_opt" not in ref_rows[0]:
            continue
        topo = load_topology(name)
        paths = compute_paths(topo, k=4, progress=False)
        static = onnx_inputs(topo, paths, np.zeros(paths.num_pairs))
        tms = tms_for(topo, source, len(ref_rows), seed)
        rows = []
        for tm, ref in zip(tms, ref_rows):
            if tm.label != ref["tm"]:
                raise SystemExit(f"{name}: TM {tm.label} does not match the reference's {ref['tm']}")
            d = tm.pair_demands(paths.pairs)
            row = {"tm": tm.label, "mlu_opt": ref["mlu_opt"]}
            for label, head in heads.items():
                split = head.route(dict(static, demand_bps=d.astype(np.float32))).split.astype(np.float64)
                row[f"valid_{label}"] = valid_split(split, paths.pair_ptr)
                row[f"over_opt_{label}"] = split_mlu(topo, paths, split, d) / ref["mlu_opt"]
            rows.append(row)
            print(f"{name} {tm.label}: " + " ".join(f"{k} {row[f'over_opt_{k}']:.4f}" for k in heads), flush=True)
        out[name] = {"paths": paths.num_paths, "rows": rows, "summary": {
            label: {"over_opt_geomean": geomean([r[f"over_opt_{label}"] for r in rows]),
                    "over_opt_worst": max(r[f"over_opt_{label}"] for r in rows),
                    "all_valid": all(r[f"valid_{label}"] for r in rows)} for label in heads}}
    return out


def main(argv=None) -> int:
    from tellm.inference.session import load_model, sha256_file

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, required=True, help="a bench_model.py result with exact optima")
    p.add_argument("--head", action="append", required=True, metavar="LABEL=ONNX", help="a head to run (repeat)")
    p.add_argument("--only", action="append", default=None, help="only these topologies (repeatable)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if not a.reference.is_file():
        p.error(f"--reference {a.reference}: no such file")
    specs = dict(h.split("=", 1) for h in a.head)
    heads = {label: load_model(f, provider="cpu", threads=a.threads) for label, f in specs.items()}
    doc = {"command": " ".join(["bench_head_compare.py"] + (argv if argv is not None else sys.argv[1:])),
           "reference": str(a.reference), "heads": {k: {"file": v, "sha256": sha256_file(v)} for k, v in specs.items()},
           "results": compare(json.loads(a.reference.read_text()), heads, a.only)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    for name, r in doc["results"].items():
        print(name, json.dumps(r["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
