"""The TE head's inference graph, written out as ONNX node by node (numpy + onnx; no torch).

It computes exactly what ``TEHead.forward`` computes for one instance, with the same weights, but in
a layout built for speed on ONNX Runtime (CPU and CUDA):

- **Pair-major padding.** Every per-path quantity is a [P, K] tensor (pair, candidate rank; K = the
  most candidates of any pair; empty slots masked). The per-pair operations of each round (softmax,
  the pair's mean gradient, best bottleneck, largest price) are plain reductions over the last axis:
  no scatter/gather over pairs.
- **Link -> path without atomics.** A padded [P, K, H] table of each path's links (H = the longest
  path; a sentinel column past the last link) turns "sum/max over the path's links" into one Gather
  from a small [C, L + 1] table and a reduction over the innermost axis.
- **Path -> link, narrow.** One ScatterElements per round carries only the three scalars the next
  observation needs per path-link entry (flow, flow^Q, flow^(Q-1)), into L x SPREAD bins per link so
  that concurrent atomic adds on the GPU rarely hit one address, then a reduction over the bins.
- **No control flow.** No ``If``/``Loop`` nodes; the layout (K, H, slots) is derived once per run
  from the contract's CSR inputs, which must list each pair's paths and each path's links
  contiguously (``features.incidence_arrays`` and the service's registration both do).
- The refinement rounds are written once for this and the per-topology graph (head_rounds.py).
- The MLPs run on [P, K, features] with MatMul; GELU is written as its erf form, which ONNX
  Runtime fuses.

Inputs and outputs are the contract's (``features.INPUT_NAMES``/``OUTPUT_NAMES``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from tellm.contract.vocabulary import INPUT_NAMES, OUTPUT_NAMES

from .graph_builder import BIG, OPSET, PAD, SPREAD, TINY, GraphBuilder
from .head_rounds import Layout, RoundInputs, RoundWeights, emit_round, softmax

@dataclass
class HeadWeights:
    """What the graph needs from a trained head: MLP layers as (W [in, out], b [out]) and step sizes."""

    init_layers: list[tuple[np.ndarray, np.ndarray]]
    refine_layers: list[tuple[np.ndarray, np.ndarray]]
    mlp_step: np.ndarray  # softplus already applied, one per round
    md_step: np.ndarray
    rounds: int
    beta: float

    @classmethod
    def from_torch(cls, model, rounds: int) -> "HeadWeights":
        import torch

        def layers(seq):
            return [(m.weight.detach().double().numpy().T.astype(np.float32), m.bias.detach().numpy().astype(np.float32))
                    for m in seq if isinstance(m, torch.nn.Linear)]

        def steps(p):
            sp = torch.nn.functional.softplus(p.detach()).numpy().astype(np.float32)
            return np.array([sp[min(t, sp.shape[0] - 1)] for t in range(rounds)], dtype=np.float32)

        return cls(layers(model.init_mlp), layers(model.refine_mlp), steps(model.mlp_step), steps(model.md_step),
                   rounds, float(model.cfg.beta))


# Column layout of the trained MLPs' first layer (model.TEHead): 8 static then 11 dynamic features.
# Per-instance constants (the policy knobs, the round fraction) and the fixed feature scalings are
# folded into the weights here, so the graph only computes the per-path columns.
_STATIC_COLS = [0, 1, 2, 3, 4, 5]  # hops stretch, latency stretch, log #paths, bottleneck cap, log demand, down
_POLICY_COLS = [6, 7]  # lambda, 2 h
_DYN_COLS = [8, 9, 10, 11, 12, 13, 14, 15, 17, 18]  # tfrac (16) folded into the per-round bias
_DYN_SCALE = np.array([10.0, 10.0, 1, 1, 1, 1, 1, 1, 10.0, 1], dtype=np.float32)
_TFRAC_COL = 16


def build_graph(w: HeadWeights) -> onnx.ModelProto:
    b = GraphBuilder()
    f32, i64, i32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
    demand, cap_in, lat_in, link_up, path_pair, inc_path, inc_link, policy = INPUT_NAMES

    def fill(shape: str, value: float, dtype=f32) -> str:
        return b.op("ConstantOfShape", shape, value=helper.make_tensor("v", dtype, [1], [value]))

    def cat(*xs, axis=0):
        return b.op("Concat", *xs, axis=axis)

    def i64c(*v):
        return b.const(list(v), np.int64)

    # ------------------------------------------------------------ layout (once per run)
    n_paths, n_ent, n_pairs, n_links = (b.op("Shape", x) for x in (path_pair, inc_path, demand, cap_in))
    ones_paths = fill(n_paths, 1.0)
    cnt_pair = b.op("ScatterElements", fill(n_pairs, 0.0), path_pair, ones_paths, reduction="add")  # [P]
    k = b.cast(b.reduce("Max", cnt_pair, 0, keep=1), i64)  # [1] most candidates of a pair
    first_path = b.op("CumSum", b.cast(cnt_pair, i64), b.const(0, np.int64), exclusive=1)
    arange_paths = b.op("Range", b.const(0, np.int64), b.op("Squeeze", n_paths, i64c(0)), b.const(1, np.int64))
    slot = b.add(b.mul(path_pair, k), b.sub(arange_paths, b.op("Gather", first_path, path_pair, axis=0)))
    pk = b.mul(n_pairs, k)
    shape_path = cat(i64c(1), n_pairs, k, i64c(1))  # per-path tensors are [1, P, K, 1]

    hops_flat = b.op("ScatterElements", fill(n_paths, 0.0), inc_path, fill(n_ent, 1.0), reduction="add")
    h = b.cast(b.reduce("Max", hops_flat, 0, keep=1), i64)  # [1] longest path
    first_ent = b.op("CumSum", b.cast(hops_flat, i64), b.const(0, np.int64), exclusive=1)
    arange_ent = b.op("Range", b.const(0, np.int64), b.op("Squeeze", n_ent, i64c(0)), b.const(1, np.int64))
    pos = b.sub(arange_ent, b.op("Gather", first_ent, inc_path, axis=0))
    ent_slot = b.op("Gather", slot, inc_path, axis=0)  # [nnz] pair slot of each entry
    # [P, K, H] link ids of each candidate; L (a virtual link with nothing on it) pads short and empty slots.
    pad_flat = b.op("ScatterElements", b.op("Expand", n_links, b.mul(pk, h)), b.add(b.mul(ent_slot, h), pos), inc_link)
    pad = b.cast(b.op("Reshape", pad_flat, cat(n_pairs, k, h)), i32)
    ent_slot32 = b.cast(ent_slot, i32)
    n_links1 = b.add(n_links, i64c(1))
    # Scatter bins: link * SPREAD + (entry mod SPREAD); one block of (L + 1) * SPREAD per column.
    n_bins = b.mul(n_links1, i64c(SPREAD))
    bins = b.add(b.mul(inc_link, i64c(SPREAD)), b.op("Mod", arange_ent, i64c(SPREAD)))
    bins3 = b.cast(cat(bins, b.add(bins, n_bins), b.add(bins, b.add(n_bins, n_bins))), i32)
    bins1 = b.cast(bins, i32)
    zeros3, zeros1 = fill(b.mul(n_bins, i64c(3)), 0.0), fill(n_bins, 0.0)
    shape3, shape1 = cat(i64c(3), n_links1, i64c(SPREAD)), cat(i64c(1), n_links1, i64c(SPREAD))
    valid = b.op("Reshape", b.op("ScatterElements", fill(pk, 0.0), slot, ones_paths), shape_path)
    pad_big = b.mul(b.sub(b.const(1.0), valid), b.const(PAD))  # 0, or +PAD on an empty slot
    pad_neg = b.mul(pad_big, b.const(-1.0))
    zeros_path = b.mul(valid, b.const(0.0))

    def to_links(cols: list[str]) -> list[str]:  # per-path [1, P, K, 1] columns -> per-link sums [1, L + 1]
        c = len(cols)
        flat = b.op("Reshape", cat(*cols) if c > 1 else cols[0], cat(i64c(c), pk))
        upd = b.op("Reshape", b.op("Gather", flat, ent_slot32, axis=1), i64c(-1))
        s = b.op("ScatterElements", zeros3 if c == 3 else zeros1, bins3 if c == 3 else bins1, upd, reduction="add")
        sums = b.reduce("Sum", b.op("Reshape", s, shape3 if c == 3 else shape1), 2)  # [C, L + 1]
        return b.split(sums, c) if c > 1 else [sums]

    def over_paths(rows: list[str], kind: str) -> list[str]:  # per-link [1, L + 1] rows -> [1, P, K, 1] each
        g = b.op("Gather", cat(*rows) if len(rows) > 1 else rows[0], pad, axis=1)
        r = b.op(f"Reduce{kind}", g, i64c(3), keepdims=1)
        return b.split(r, len(rows)) if len(rows) > 1 else [r]

    def pair(kind: str, x: str) -> str:  # reduction over each pair's candidates -> [1, P, 1, 1]
        return b.reduce(kind, x, 2, keep=1)

    # ------------------------------------------------------------ per-link constants, [1, L + 1]
    def ext(x, value):  # [L] -> [1, L + 1] with the virtual link's value
        return b.unsq(cat(x, b.const([value])), 0)

    up = ext(b.cast(b.op("Greater", link_up, b.const(0.5)), f32), 0.0)
    cap = ext(cap_in, 1.0)
    inv_cap = b.op("Reciprocal", cap)
    up_cap = b.mul(up, inv_cap)
    lat = ext(b.add(b.maxc(lat_in, 0.0), b.const(1.0e-6)), 0.0)
    real = ext(fill(n_links, 1.0), 0.0)
    # Static path features: hops and latency sums, down / bottleneck maxima (virtual link: 0, 0, 0, -1).
    not_up_real = b.mul(b.sub(b.const(1.0), up), real)
    neg_cap = ext(b.div(cap_in, b.mul(b.reduce("Max", cap_in, 0, keep=1), b.const(-1.0))), -1.0)  # -cap / max cap
    hops, path_lat = over_paths([real, lat], "Sum")
    path_down, neg_bott_cap = over_paths([not_up_real, neg_cap], "Max")
    inv_hops = b.op("Reciprocal", b.maxc(hops, 1.0))
    mask = b.mul(path_down, b.const(-BIG))
    min_hops = pair("Min", b.add(b.add(hops, b.mul(path_down, b.const(BIG))), pad_big))
    min_lat = pair("Min", b.add(b.mul(path_lat, b.add(b.const(1.0), b.mul(path_down, b.const(BIG)))), pad_big))
    dmax_raw = b.reduce("Max", demand, 0, keep=1)
    dmax = b.maxc(dmax_raw, TINY)
    d_path = b.op("Reshape", demand, cat(i64c(1), n_pairs, i64c(1, 1)))  # [1, P, 1, 1]
    d_rel = b.div(d_path, dmax)
    lam = b.op("Slice", policy, i64c(0), i64c(1))  # [1]
    hp = b.op("Slice", policy, i64c(1), i64c(2))
    hpd = b.mul(hp, dmax_raw)
    pair_min_lat = pair("Min", b.add(path_lat, pad_big))
    lat_base = b.maxc(b.op("ReduceSum", b.mul(d_path, pair_min_lat), keepdims=0), TINY)  # scalar
    lat_grad = b.div(b.mul(b.mul(lam, d_path), path_lat), lat_base)
    n_cand = b.op("Reshape", cnt_pair, cat(i64c(1), n_pairs, i64c(1, 1)))
    static = cat(
        b.minc(b.sub(b.div(hops, b.maxc(min_hops, 1.0)), b.const(1.0)), 4.0),
        b.minc(b.maxc(b.sub(b.div(path_lat, min_lat), b.const(1.0)), 0.0), 4.0),
        b.add(zeros_path, b.op("Log", n_cand)),
        b.sub(b.const(0.0), neg_bott_cap),
        b.add(zeros_path, b.div(b.op("Log", b.add(d_rel, b.const(1.0e-6))), b.const(14.0))),
        path_down, axis=3)  # [1, P, K, 6]
    knobs = b.op("Reshape", cat(lam, b.mul(hp, b.const(2.0))), i64c(1, 2))  # [1, 2]

    def first_bias(layers) -> str:  # b1 + [lambda, 2h] @ W1[policy rows] -> [1, H1]
        w1, b1 = layers[0]
        return b.add(b.op("MatMul", knobs, b.weight(w1[_POLICY_COLS], "w_pol")), b.weight(b1[None, :], "b1"))

    init_w1, _ = w.init_layers[0]
    x = b.dense(static, b.weight(init_w1[_STATIC_COLS], "init_w0"), first_bias(w.init_layers), True)
    x = b.dense(x, b.weight(w.init_layers[1][0], "init_w1"), b.weight(w.init_layers[1][1], "init_b1"), True)
    x = b.dense(x, b.weight(w.init_layers[2][0], "init_w2"), b.weight(w.init_layers[2][1], "init_b2"), False)
    z = b.add(x, mask)

    ref_w1, _ = w.refine_layers[0]
    w0 = b.weight(np.concatenate([ref_w1[_STATIC_COLS], ref_w1[_DYN_COLS] * _DYN_SCALE[:, None]]), "ref_w0")
    ref_bias = first_bias(w.refine_layers)
    tfrac = np.array([t / max(w.rounds - 1, 1) for t in range(w.rounds)], dtype=np.float32)
    round_bias = b.add(ref_bias, b.weight(tfrac[:, None] * ref_w1[_TFRAC_COL][None, :], "ref_tfrac"))  # [R, H1]
    w1n, b1n = b.weight(w.refine_layers[1][0], "ref_w1"), b.weight(w.refine_layers[1][1], "ref_b1")
    w2, b2 = w.refine_layers[2]
    beta, neg_beta = b.const(w.beta), b.const(-w.beta)
    not_down = b.sub(b.const(1.0), path_down)
    down2 = b.add(b.mul(path_down, b.const(2.0)), pad_big)

    lay = Layout(pair=pair, to_links=to_links, over_paths=over_paths, per_batch=lambda v: v, pad_neg=pad_neg)
    ins = RoundInputs(static=static, d_path=d_path, d_rel=d_rel, hp_path=hp, hpd=hpd, up=up, up_cap=up_cap,
                      inv_cap=inv_cap, inv_hops=inv_hops, lat_grad=lat_grad, not_down=not_down, down2=down2,
                      beta=beta, neg_beta=neg_beta)
    steps = [float(s) for s in w.mlp_step[:w.rounds]]  # each round's step size folded into the last layer
    rw = RoundWeights(w0=w0, w1=w1n, b1=b1n, w2=[w2 * s for s in steps], b2=[b2 * s for s in steps],
                      md10=[float(s) * 10.0 for s in w.md_step[:w.rounds]],
                      bias=lambda t: b.op("Gather", round_bias, i64c(t), axis=0))
    for t in range(w.rounds):
        z = emit_round(b, lay, ins, rw, t, z)

    split = softmax(b, lay, z)
    (loads,) = to_links([b.mul(split, d_path)])
    loads_l = b.op("Reshape", b.op("Slice", loads, i64c(0), n_links, i64c(1)), i64c(-1))
    b.op("Identity", loads_l, out="link_load_bps")
    b.op("ReduceMax", b.mul(loads, up_cap), i64c(0, 1), keepdims=0, out="mlu_scalar")
    b.op("Reshape", "mlu_scalar", i64c(1), out="mlu")
    b.op("Gather", b.op("Reshape", split, i64c(-1)), slot, axis=0, out="split")

    types = {demand: f32, cap_in: f32, lat_in: f32, link_up: f32, path_pair: i64, inc_path: i64, inc_link: i64,
             policy: f32}
    dims = {demand: ["P"], cap_in: ["L"], lat_in: ["L"], link_up: ["L"], path_pair: ["Np"], inc_path: ["nnz"],
            inc_link: ["nnz"], policy: [4]}
    inputs = [helper.make_tensor_value_info(n, types[n], dims[n]) for n in INPUT_NAMES]
    out_dims = {"split": ["Np"], "link_load_bps": ["L"], "mlu": [1]}
    outputs = [helper.make_tensor_value_info(n, f32, out_dims[n]) for n in OUTPUT_NAMES]
    graph = helper.make_graph(b.nodes, "tellm_te_head", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tellm")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
