"""Writing ONNX graphs node by node: a small builder with constant de-duplication and op shorthands,
and the numeric constants the TE head's graphs share (padded_graph.py, specialise.py, head_rounds.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from onnx import helper, numpy_helper

BIG = 1.0e4  # logit penalty of paths over a down link (as in the PyTorch model)
SURGE_Q = 4.0
TINY = 1.0e-30
PAD = 1.0e30  # moves empty candidate slots out of every min/max/softmax
SPREAD = 16  # bins per link for the path -> link scatter (atomic contention on the GPU)
OPSET = 18


@dataclass
class GraphBuilder:
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    _consts: dict = field(default_factory=dict)
    _n: int = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, value, dtype=np.float32) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            nm = self.name("c")
            self.inits.append(numpy_helper.from_array(arr, nm))
            self._consts[key] = nm
        return self._consts[key]

    def weight(self, arr: np.ndarray, hint: str) -> str:
        nm = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), nm))
        return nm

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        o = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [o], **attrs))
        return o

    def split(self, x: str, n: int, axis: int = 0) -> list[str]:
        outs = [self.name("split") for _ in range(n)]
        self.nodes.append(helper.make_node("Split", [x], outs, axis=axis, num_outputs=n))
        return outs

    # shorthands
    def add(self, a, b): return self.op("Add", a, b)
    def sub(self, a, b): return self.op("Sub", a, b)
    def mul(self, a, b): return self.op("Mul", a, b)
    def div(self, a, b): return self.op("Div", a, b)
    def maxc(self, a, v): return self.op("Max", a, self.const(v))
    def minc(self, a, v): return self.op("Min", a, self.const(v))
    def cast(self, a, to): return self.op("Cast", a, to=to)

    def reduce(self, kind: str, x: str, axis: int, keep: int = 0) -> str:
        return self.op(f"Reduce{kind}", x, self.const([axis], np.int64), keepdims=keep)

    def unsq(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", x, self.const([axis], np.int64))

    def row(self, x: str, i: int) -> str:  # x[i] of a stacked tensor
        return self.op("Gather", x, self.const(i, np.int64), axis=0)

    def stack(self, xs: list[str], axis: int) -> str:
        return self.op("Concat", *[self.unsq(x, axis) for x in xs], axis=axis)

    def gelu(self, x: str, dtype=np.float32) -> str:  # exact GELU in the erf form ONNX Runtime fuses into one kernel
        erf = self.op("Erf", self.div(x, self.const(math.sqrt(2.0), dtype)))
        return self.mul(self.mul(x, self.add(erf, self.const(1.0, dtype))), self.const(0.5, dtype))

    def dense(self, x: str, w: str, b: str, act: bool, dtype=np.float32) -> str:
        y = self.add(self.op("MatMul", x, w), b)
        return self.gelu(y, dtype) if act else y
