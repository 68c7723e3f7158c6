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
- The MLPs run on [P, K, features] with MatMul; GELU is written as its erf form, which ONNX
  Runtime fuses.

Inputs and outputs are the contract's (``features.INPUT_NAMES``/``OUTPUT_NAMES``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tellm.contract.vocabulary import INPUT_NAMES, OUTPUT_NAMES

BIG = 1.0e4  # logit penalty of paths over a down link (as in the PyTorch model)
SURGE_Q = 4.0
TINY = 1.0e-30
PAD = 1.0e30  # moves empty candidate slots out of every min/max/softmax
SPREAD = 16  # bins per link for the path -> link scatter (atomic contention on the GPU)
OPSET = 18


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


@dataclass
class _Builder:
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

    def gelu(self, x: str) -> str:  # exact GELU in the erf form ONNX Runtime fuses into one kernel
        erf = self.op("Erf", self.div(x, self.const(math.sqrt(2.0))))
        return self.mul(self.mul(x, self.add(erf, self.const(1.0))), self.const(0.5))

    def dense(self, x: str, w: str, b: str, act: bool) -> str:
        y = self.add(self.op("MatMul", x, w), b)
        return self.gelu(y) if act else y


# Column layout of the trained MLPs' first layer (model.TEHead): 8 static then 11 dynamic features.
# Per-instance constants (the policy knobs, the round fraction) and the fixed feature scalings are
# folded into the weights here, so the graph only computes the per-path columns.
_STATIC_COLS = [0, 1, 2, 3, 4, 5]  # hops stretch, latency stretch, log #paths, bottleneck cap, log demand, down
_POLICY_COLS = [6, 7]  # lambda, 2 h
_DYN_COLS = [8, 9, 10, 11, 12, 13, 14, 15, 17, 18]  # tfrac (16) folded into the per-round bias
_DYN_SCALE = np.array([10.0, 10.0, 1, 1, 1, 1, 1, 1, 10.0, 1], dtype=np.float32)
_TFRAC_COL = 16


def build_graph(w: HeadWeights) -> onnx.ModelProto:
    b = _Builder()
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

    def softmax(z):
        zz = b.add(z, pad_neg)
        e = b.op("Exp", b.sub(zz, pair("Max", zz)))
        return b.div(e, pair("Sum", e))

    for t in range(w.rounds):
        split = softmax(z)
        flow = b.mul(split, d_path)
        f = b.mul(split, d_rel)
        f3 = b.mul(b.mul(f, f), f)
        loads, fq4, fq3 = to_links([flow, b.mul(f3, f), f3])
        surge_rel = b.div(fq4, b.maxc(fq3, TINY))
        eff = b.mul(b.add(loads, b.mul(hpd, surge_rel)), up_cap)
        m = b.maxc(b.reduce("Max", eff, 1, keep=1), TINY)  # [1, 1]
        ur = b.div(eff, m)
        hot = b.mul(b.op("Exp", b.add(b.mul(ur, beta), neg_beta)), up)
        w_cap = b.mul(b.div(hot, b.maxc(b.reduce("Sum", hot, 1, keep=1), TINY)), inv_cap)
        top_l = b.op("Pow", b.maxc(surge_rel, 1.0e-12), b.const(1.0 - SURGE_Q))
        s_price, s_ur, s_top = over_paths([w_cap, ur, b.mul(w_cap, top_l)], "Sum")
        (bott,) = over_paths([ur], "Max")
        surge_price = b.mul(b.mul(hp, f3), s_top)
        price = b.add(s_price, surge_price)
        lat_rel = b.minc(b.div(lat_grad, m), 10.0)
        grad_rel = b.add(b.minc(b.div(b.mul(d_path, price), m), 10.0), lat_rel)
        adv = b.sub(grad_rel, pair("Sum", b.mul(split, grad_rel)))
        bott_min = pair("Min", b.add(bott, down2))
        pmax = b.maxc(pair("Max", b.mul(price, not_down)), TINY)
        feats = cat(static, adv, grad_rel, bott, b.sub(bott, bott_min), b.op("Exp", b.add(b.mul(bott, beta), neg_beta)),
                    b.mul(s_ur, inv_hops), split, b.minc(b.div(price, pmax), 2.0), lat_rel,
                    b.div(surge_price, b.maxc(price, TINY)), axis=3)
        x = b.dense(feats, w0, b.op("Gather", round_bias, i64c(t), axis=0), True)
        x = b.dense(x, w1n, b1n, True)
        step = float(w.mlp_step[t])  # the round's step size folded into the last layer
        corr = b.dense(x, b.weight(w2 * step, "ref_w2"), b.weight(b2 * step, "ref_b2"), False)
        z = b.sub(b.add(z, corr), b.mul(adv, b.const(float(w.md_step[t]) * 10.0)))

    split = softmax(z)
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
