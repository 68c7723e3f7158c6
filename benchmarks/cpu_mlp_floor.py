#!/usr/bin/env python3
"""The arithmetic floor of the TE head on this machine's CPU: its refinement MLP's products alone.

Every path runs the refinement MLP once per round plus once at the start; the MLP's layer sizes and
the round count come from the shipped model file, the path counts from each topology's hop-shortest
k = 4 paths (``--synthetic-paths``: each pair's shortest path k times, Yen's sizes). The rate is the
fastest of 100 runs each of numpy's float32 product of the MLP's hidden layer over blocks of 2,048,
16,384 and 131,072 paths (the best case: no gathers, no activations), measured here; the nominal
AVX-512 peak of the cores is higher, so this floor is what numpy's products reach, not the silicon's. ``floor_ms`` = FLOPs / rate: no
implementation of this head on this CPU in float32 runs a TM faster.

    python benchmarks/cpu_mlp_floor.py --topologies sndlib:geant zoo:GtsCe zoo:Cogentco zoo:Kdl \
        --synthetic-paths zoo:Kdl --out benchmarks/results/cpu_mlp_floor.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Paths per product when the rate is measured: from a block that stays in cache (as a fused kernel
#: would tile its paths) to one that does not; the best rate of any is the floor's rate.
BLOCK_ROWS = (2048, 16384, 131072)


def mlp_flops_per_path(weights) -> tuple[int, int]:
    """(FLOPs of the MLP passes over one path in one TM, the number of passes): the initial MLP once,
    the refinement MLP once per round (matrix products only: 2 FLOPs per multiply-add)."""
    def mlp(w0, w1, w2):
        return 2 * (w0.shape[0] * w0.shape[1] + w1.shape[0] * w1.shape[1] + w2.size)

    init = mlp(weights.init[0], weights.init[3], weights.init[5])
    refine = mlp(weights.refine[0], weights.refine[3], weights.w2[0])
    return init + weights.rounds * refine, weights.rounds + 1


def sgemm_rate_flops(rows: int, inner: int, cols: int, runs: int = 100) -> float:
    rng = np.random.default_rng(0)
    a = rng.random((rows, inner), dtype=np.float32)
    b = rng.random((inner, cols), dtype=np.float32)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * rows * inner * cols / min(times)  # the best run: a floor takes the fastest rate seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "inference" / "models" / "tellm-te.onnx")
    p.add_argument("--topologies", nargs="+", default=["sndlib:geant", "zoo:GtsCe", "zoo:Cogentco"])
    p.add_argument("--synthetic-paths", nargs="*", default=[], metavar="TOPOLOGY")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    import onnx

    from tecore import compute_paths, load_topology
    from tellm.commands.common import write_json
    from tellm.inference.specialise import FoldedWeights

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_inference import replicated_shortest_paths

    weights = FoldedWeights.from_onnx(onnx.load(str(a.model)))
    flops, passes = mlp_flops_per_path(weights)
    hidden = int(weights.refine[3].shape[0])
    rates = {n: sgemm_rate_flops(n, hidden, hidden) for n in BLOCK_ROWS}
    rate = max(rates.values())
    rows = []
    for name in a.topologies:
        topo = load_topology(name)
        paths = (replicated_shortest_paths(topo, 4) if name in a.synthetic_paths
                 else compute_paths(topo, k=4, strategy="shortest"))
        total = paths.num_paths * flops
        rows.append({"topology": name, "paths": paths.num_paths, "mlp_gflop_per_tm": total / 1e9,
                     "floor_ms": 1e3 * total / rate})
        r = rows[-1]
        print(f"{name}: {r['paths']} paths, {r['mlp_gflop_per_tm']:.3f} GFLOP of MLP per TM; float32 product at "
              f"{rate / 1e9:.0f} GFLOP/s -> floor {r['floor_ms']:.1f} ms per TM")
    doc = {"benchmark": "arithmetic floor of the TE head's refinement MLP on this CPU",
           "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
           "cores": os.cpu_count(), "load_average": os.getloadavg(), "mlp_flops_per_path_per_tm": flops,
           "passes_per_tm": passes, "hidden": hidden, "sgemm_gflops": rate / 1e9,
           "sgemm_gflops_by_rows": {n: r / 1e9 for n, r in rates.items()}, "rows": rows}
    if a.out:
        write_json(a.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
