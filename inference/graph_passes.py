"""Rewrites of a built head graph for one ONNX Runtime execution provider (same function, same bits).

``rank_matched_scalars``: ONNX Runtime's CPU kernels broadcast a rank-0 (or [1]) constant against a
tensor whose innermost axis has one element value by value, at about 20 ns each: on GEANT's [B, P, K,
1] per-path tensors (1,848 values) a ``Min`` with a scalar takes 27-47 us where the same ``Min`` with
the constant shaped [1, 1, 1, 1] takes 1-2 us (onnxruntime 1.32, this project's CPU machine). The head's
rounds apply dozens of scalar constants to per-path tensors (clamps, steps, the softmax sharpness), so
the pass reshapes each such constant to the rank of the tensor it meets. Constants that meet a tensor
with a wider innermost axis (the MLP's [.., 64] activations) are left alone: the kernels are fast there
and ORT's GELU fusion matches scalar constants only.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

#: Elementwise operators with numpy broadcasting over their inputs.
BROADCASTING_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Mod", "Equal", "Less",
                              "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Where"})


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Each tensor's dims as shape inference gives them (None for a symbolic or unknown dim)."""
    g = shape_inference.infer_shapes(model).graph
    out = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


def rank_matched_scalars(model: onnx.ModelProto) -> int:
    """Reshape one-element constants to the rank of the tensor they meet wherever that tensor's
    innermost axis is 1 (in place); returns how many node inputs were rewired."""
    shapes = _shapes(model)
    inits = {t.name: t for t in model.graph.initializer}
    made: dict[tuple[str, int], str] = {}
    rewired = 0
    for node in model.graph.node:
        if node.op_type not in BROADCASTING_OPS:
            continue
        partners = [shapes[i] for i in node.input if i not in inits and i in shapes]
        # Only where a partner of the output's rank ends in a one-element axis (the slow kernels).
        rank = max((len(s) for s in partners), default=0)
        if rank < 2 or not any(len(s) == rank and s[-1] == 1 for s in partners):
            continue
        for j, name in enumerate(node.input):
            t = inits.get(name)
            if t is None or len(t.dims) >= rank or int(np.prod(t.dims, dtype=np.int64)) != 1:
                continue
            key = (name, rank)
            if key not in made:
                new = f"{name}_rank{rank}"
                model.graph.initializer.append(numpy_helper.from_array(
                    numpy_helper.to_array(t).reshape([1] * rank), new))
                made[key] = new
            node.input[j] = made[key]
            rewired += 1
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)  # the scalars no node reads any more
    return rewired
