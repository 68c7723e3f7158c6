#!/usr/bin/env python3
"""How ONNX Runtime's CPU kernels broadcast: the time of one elementwise node by operand shapes.

A chain of ``--nodes`` nodes of one operator, each applying the second operand (a graph input of the
given shape) to the previous result, timed per node (median of 20 runs of the chain, after warm-up).
The per-path tensors of the TE head are [B, P, K, 1]; the cases set them against constants of rank 0
and of their own rank, against per-pair [B, P, 1, 1] values, and the same sizes with the unit axis
left out.

    python benchmarks/ort_cpu_broadcast.py --out benchmarks/results/ort_cpu_broadcast.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

#: (per-path shape, operand shape) pairs; P = 462 (GEANT) and 22,052 (GtsCe), K = 4.
CASES = [
    ([1, 462, 4, 1], []), ([1, 462, 4, 1], [1]), ([1, 462, 4, 1], [1, 1, 1, 1]), ([1, 462, 4, 1], [1, 462, 4, 1]),
    ([1, 462, 4, 1], [1, 462, 1, 1]), ([1, 462, 4], []), ([1, 462, 4], [1, 462, 1]), ([1, 4, 462], [1, 1, 462]),
    ([1, 22052, 4, 1], []), ([1, 22052, 4, 1], [1, 1, 1, 1]), ([1, 22052, 4, 1], [1, 22052, 1, 1]),
    ([1, 4, 22052], [1, 1, 22052]),
]


def chain(op: str, nodes: int, shape: list[int], operand: list[int]) -> bytes:
    from onnx import TensorProto, helper

    body, prev = [], "x"
    for i in range(nodes):
        body.append(helper.make_node(op, [prev, "c"], [f"y{i}"]))
        prev = f"y{i}"
    g = helper.make_graph(body, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                                          helper.make_tensor_value_info("c", TensorProto.FLOAT, operand)],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ops", nargs="+", default=["Mul", "Min"])
    p.add_argument("--nodes", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    import onnxruntime as ort

    from tellm.commands.common import write_json
    from tellm.inference.topology_head import cpu_session_options

    rows = []
    for op in a.ops:
        for shape, operand in CASES:
            s = ort.InferenceSession(chain(op, a.nodes, shape, operand), cpu_session_options(a.threads),
                                     providers=["CPUExecutionProvider"])
            feeds = {"x": np.random.default_rng(0).random(shape, dtype=np.float32),
                     "c": np.full(operand, 0.9999, np.float32)}
            for _ in range(3):
                s.run(None, feeds)
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                s.run(None, feeds)
                times.append(time.perf_counter() - t0)
            us = 1e6 * float(np.median(times)) / a.nodes
            rows.append({"op": op, "shape": shape, "operand": operand, "us_per_node": us})
            print(f"{op:4s} {str(shape):18s} with {str(operand):18s} {us:8.2f} us per node")
    if a.out:
        write_json(a.out, {"benchmark": "ORT CPU elementwise node time by operand shapes",
                           "command": " ".join([Path(sys.argv[0]).as_posix(),
                                                *(argv if argv is not None else sys.argv[1:])]),
                           "onnxruntime": ort.__version__, "cores": os.cpu_count(),
                           "load_average": os.getloadavg(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
