"""The TE head specialised to one registered topology: its layout baked in, static shapes, a batch axis.

The generic graph (padded_graph.py, the shipped file) derives the padded layout from the incidence
inputs on every run and scatters path values into links with float atomics. Here the same function,
with the same weights (read back from the generic graph, ``FoldedWeights.from_onnx``), is written for
one topology (the round math itself is shared with the generic graph: head_rounds.py):

- **Layout once, in numpy.** Each candidate's slot in the pair-major [P, K] grid, the padded [H, P, K]
  table of each path's links, the per-path constants (hops, latency, bottleneck capacity, empty-slot
  pads) and the link-sorted incidence are computed at registration (``build_tables``) and handed to
  ONNX Runtime once as bound inputs (``t_*``): no per-run setup, and every shape is static except the
  batch axis.
- **Path -> link without atomics.** ``dense`` layout (small topologies): one MatMul with the
  [P*K, L+1] incidence. ``csr`` layout: a link-sorted (CSR by link) gather of each link's entries,
  padded to width W, with heavy links split over several rows, then an innermost ReduceSum; a second
  padded gather + ReduceSum adds the rows of a split link.
- **Link -> path.** ``dense``: Gemm with the transposed incidence for sums. Both layouts: one Gather
  through the [H, P, K] table and an elementwise Max/Sum of the H slices (no generic reductions).
- **Per-pair reductions over K** are elementwise Max/Min/Sum of the K slices.
- **Batch axis.** Inputs ``demand_bps`` [B, P], ``link_up`` [B, L], ``policy`` [B, 4]; outputs
  ``split`` [B, Np], ``link_load_bps`` [B, L], ``mlu`` [B]: several TMs of the topology in one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph_builder import BIG, OPSET, TINY, GraphBuilder
from .head_rounds import Layout, RoundInputs, RoundWeights, emit_round, softmax
from .specialise_tables import Tables

DYNAMIC_INPUTS = ("demand_bps", "link_up", "policy")
OUTPUTS = ("split", "link_load_bps", "mlu")


@dataclass(frozen=True)
class FoldedWeights:
    """The trained head as the generic graph holds it (policy rows, round fractions and steps folded)."""

    init: list[np.ndarray]  # w0 [6, H1], w_pol [2, H1], b1 [1, H1], w1, b1', w2, b2'
    refine: list[np.ndarray]  # w0 [16, H1], w_pol, b1, w1, b1'
    tfrac: np.ndarray  # [R, H1] per-round bias of the refine MLP's first layer
    w2: list[np.ndarray]  # per round, step folded
    b2: list[np.ndarray]
    md10: np.ndarray  # [R] mirror-descent step x 10
    beta: float

    @property
    def rounds(self) -> int:
        return len(self.w2)

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto) -> "FoldedWeights":
        """Read the weights out of a generic graph written by padded_graph.build_graph."""
        g = model.graph
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        by_hint: dict[str, list[tuple[int, str]]] = {}
        for name in inits:
            hint, _, n = name.rpartition("_")
            if n.isdigit():
                by_hint.setdefault(hint, []).append((int(n), name))
        ordered = {h: [inits[nm] for _, nm in sorted(v)] for h, v in by_hint.items()}

        def one(hint, i=0):
            try:
                return ordered[hint][i]
            except (KeyError, IndexError) as exc:
                raise ValueError(f"not a padded TE head graph: no weight {hint!r} #{i}") from exc

        producer = {o: n for n in g.node for o in n.output}
        consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        md10, beta = [], set()
        for nm in [nm for _, nm in sorted(by_hint.get("ref_b2", []))]:
            corr = next(n for n in consumers[nm] if n.op_type == "Add").output[0]  # MatMul + b2
            zc = next(n for n in consumers[corr] if n.op_type == "Add").output[0]  # z + corr
            sub = next(n for n in consumers[zc] if n.op_type == "Sub")
            mul = producer[sub.input[1]]
            md10.append(float(inits[mul.input[1]]))
        for n in g.node:  # Exp(x * beta + (-beta)): the soft-max sharpness
            if n.op_type == "Exp" and n.input[0] in producer and producer[n.input[0]].op_type == "Add":
                add = producer[n.input[0]]
                mul = producer.get(add.input[0])
                if mul is not None and mul.op_type == "Mul" and mul.input[1] in inits and add.input[1] in inits:
                    bv, nb = float(inits[mul.input[1]]), float(inits[add.input[1]])
                    if bv == -nb:
                        beta.add(bv)
        if len(beta) != 1 or not md10:
            raise ValueError("not a padded TE head graph: cannot find the round steps / beta")
        return cls(init=[one("init_w0"), one("w_pol", 0), one("b1", 0), one("init_w1"), one("init_b1"),
                         one("init_w2"), one("init_b2")],
                   refine=[one("ref_w0"), one("w_pol", 1), one("b1", 1), one("ref_w1"), one("ref_b1")],
                   tfrac=one("ref_tfrac"), w2=ordered["ref_w2"], b2=ordered["ref_b2"],
                   md10=np.asarray(md10, dtype=np.float32), beta=beta.pop())


#: Float types the refine MLP may run in (``build_specialised(mlp_dtype=...)``).
MLP_DTYPES = {"float32": np.float32, "float16": np.float16}


def build_specialised(w: FoldedWeights, t: Tables, mlp_dtype: str = "float32") -> onnx.ModelProto:
    """The head for one topology: inputs DYNAMIC_INPUTS + the tables' ``t_*``, outputs OUTPUTS.

    ``mlp_dtype="float16"`` runs the refinement rounds' MLP (most of the arithmetic, and on large
    topologies most of the bytes written per round) in half precision; everything else, the loads,
    prices and softmax included, stays float32."""
    if mlp_dtype not in MLP_DTYPES:
        raise ValueError(f"mlp_dtype must be one of {', '.join(MLP_DTYPES)}, not {mlp_dtype!r}")
    dt = MLP_DTYPES[mlp_dtype]
    b = GraphBuilder()
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    P, K, H, L, Np = t.num_pairs, t.k, t.h, t.num_links, t.num_paths

    def i64c(*v):
        return b.const(list(v), np.int64)

    def cat(*xs, axis=0):
        return b.op("Concat", *xs, axis=axis) if len(xs) > 1 else xs[0]

    def reshape(x, *shape):
        return b.op("Reshape", x, i64c(*shape))

    def split(x, n, axis):
        return b.split(x, n, axis) if n > 1 else [x]

    def vari(kind, xs):  # elementwise Max/Min/Sum of several tensors
        return b.op(kind, *xs) if len(xs) > 1 else xs[0]

    def pair(kind, x):  # [B, P, K, 1] -> [B, P, 1, 1] over each pair's candidates
        return vari(kind, split(x, K, 2))

    buckets = sorted((n for n in t.arrays if n.startswith("t_bucket")), key=lambda n: int(n[8:]))

    def rows_of(x):  # [A, X] <-> [X, A]
        return b.op("Transpose", x, perm=[1, 0])

    def over_paths(rows, kind):  # per-link [B, L+1] rows -> [B, P, K, 1] each (Sum or Max over the path)
        c = len(rows)
        stacked = cat(*rows)  # [C*B, L+1]
        if kind == "Sum" and t.layout == "dense":
            r = b.op("Gemm", stacked, "t_inc", transB=1)  # [C*B, P*K]
        elif t.layout == "bucketed":
            table = rows_of(stacked)  # [L+1, C*B]: one row per link
            parts = [b.reduce(kind, b.op("Gather", table, nm, axis=0), 0) for nm in buckets]  # [n, C*B] each
            r = rows_of(b.op("Gather", cat(*parts), "t_perm", axis=0))  # slot order, [C*B, P*K]
        else:
            g = b.op("Gather", stacked, "t_pad", axis=1)  # [C*B, H, P, K]
            if kind == "Sum":  # one batched product with ones: no copy of the H slices (a Split) first
                r = b.op("MatMul", b.const(np.ones((1, H), np.float32)), reshape(g, -1, H, P * K))
            else:
                r = vari(kind, split(g, H, 1))
        return split(reshape(r, -1, P, K, 1), c, 0)

    def to_links(cols):  # per-path [B, P, K, 1] columns -> per-link sums [B, L+1] each
        c = len(cols)
        flat = reshape(cat(*cols), -1, P * K)  # [C*B, P*K]
        if t.layout == "dense":
            sums = b.op("MatMul", flat, "t_inc")
        elif t.layout == "bucketed":
            table = b.op("Pad", rows_of(flat), i64c(0, 0, 1, 0))  # [P*K+1, C*B]; row P*K reads 0
            s1 = b.op("Pad", b.reduce("Sum", b.op("Gather", table, "t_idx1", axis=0), 0), i64c(0, 0, 1, 0))
            if "t_idx2" in t.arrays:  # [R+1, C*B] -> [L+1, C*B]
                s1 = b.reduce("Sum", b.op("Gather", s1, "t_idx2", axis=0), 0)
            sums = rows_of(s1)
        else:
            padded = b.op("Pad", flat, i64c(0, 0, 0, 1))  # slot P*K reads 0
            s1 = b.reduce("Sum", b.op("Gather", padded, "t_idx1", axis=1), 2)  # [C*B, R]
            if "t_idx2" in t.arrays:
                sums = b.reduce("Sum", b.op("Gather", b.op("Pad", s1, i64c(0, 0, 0, 1)), "t_idx2", axis=1), 2)
            else:
                sums = b.op("Pad", s1, i64c(0, 0, 0, 1))  # one row per link, plus the virtual link
        return split(sums, c, 0)

    def per_batch(x):  # [B, 1] -> [B, 1, 1, 1]
        return reshape(x, -1, 1, 1, 1)

    demand, link_up, policy = DYNAMIC_INPUTS
    inv_cap, real = split("t_link", 2, 0)  # [1, L+1]
    log_cand, pair_min_lat = (reshape(x, 1, P, 1, 1) for x in split("t_pair", 2, 0))
    hops, path_lat, pad_big = "t_hops", "t_path_lat", "t_pad_big"
    pad_neg = b.mul(pad_big, b.const(-1.0))
    up = b.op("Pad", b.cast(b.op("Greater", link_up, b.const(0.5)), f32), i64c(0, 0, 0, 1))  # [B, L+1]
    up_cap = b.mul(up, inv_cap)
    not_up_real = b.mul(b.sub(b.const(1.0), up), real)
    if t.layout == "dense":  # down is 0/1, so the path's max equals min(1, sum)
        (path_down,) = over_paths([not_up_real], "Sum")
        path_down = b.minc(path_down, 1.0)
    else:
        (path_down,) = over_paths([not_up_real], "Max")
    zeros = b.mul(path_down, b.const(0.0))  # [B, P, K, 1]
    inv_hops = b.op("Reciprocal", b.maxc(hops, 1.0))
    mask = b.mul(path_down, b.const(-BIG))
    min_hops = pair("Min", b.add(b.add(hops, b.mul(path_down, b.const(BIG))), pad_big))
    min_lat = pair("Min", b.add(b.mul(path_lat, b.add(b.const(1.0), b.mul(path_down, b.const(BIG)))), pad_big))
    dmax_raw = b.reduce("Max", demand, 1, keep=1)  # [B, 1]
    dmax_p = per_batch(b.maxc(dmax_raw, TINY))
    d_path = reshape(demand, -1, P, 1, 1)
    d_rel = b.div(d_path, dmax_p)
    lam = b.op("Slice", policy, i64c(0), i64c(1), i64c(1))  # [B, 1]
    hp = b.op("Slice", policy, i64c(1), i64c(2), i64c(1))
    hp_p = per_batch(hp)
    hpd = b.mul(hp, dmax_raw)  # [B, 1]
    lat_base = b.maxc(b.op("ReduceSum", b.mul(d_path, pair_min_lat), i64c(1, 2, 3), keepdims=1), TINY)
    lat_grad = b.div(b.mul(b.mul(per_batch(lam), d_path), path_lat), lat_base)
    static = cat(
        b.minc(b.sub(b.div(hops, b.maxc(min_hops, 1.0)), b.const(1.0)), 4.0),
        b.minc(b.maxc(b.sub(b.div(path_lat, min_lat), b.const(1.0)), 0.0), 4.0),
        b.add(zeros, log_cand),
        b.add(zeros, "t_bott_cap"),
        b.add(zeros, b.div(b.op("Log", b.add(d_rel, b.const(1.0e-6))), b.const(14.0))),
        path_down, axis=3)  # [B, P, K, 6]
    knobs = cat(lam, b.mul(hp, b.const(2.0)), axis=1)  # [B, 2]

    def first_bias(w_pol, b1):  # [B, 1, 1, H1]
        return b.op("Unsqueeze", b.add(b.op("MatMul", knobs, b.weight(w_pol, "w_pol")), b.weight(b1, "b1")),
                    i64c(1, 2))

    iw = w.init
    x = b.dense(static, b.weight(iw[0], "init_w0"), first_bias(iw[1], iw[2]), True)
    x = b.dense(x, b.weight(iw[3], "init_w1"), b.weight(iw[4], "init_b1"), True)
    x = b.dense(x, b.weight(iw[5], "init_w2"), b.weight(iw[6], "init_b2"), False)
    z = b.add(x, mask)

    rw = w.refine
    w0 = b.weight(rw[0].astype(dt), "ref_w0")
    ref_bias = first_bias(rw[1], rw[2])
    w1n, b1n = b.weight(rw[3].astype(dt), "ref_w1"), b.weight(rw[4].astype(dt), "ref_b1")
    beta, neg_beta = b.const(w.beta), b.const(-w.beta)
    not_down = b.sub(b.const(1.0), path_down)
    down2 = b.add(b.mul(path_down, b.const(2.0)), pad_big)

    lay = Layout(pair=pair, to_links=to_links, over_paths=over_paths, per_batch=per_batch, pad_neg=pad_neg)
    ins = RoundInputs(static=static, d_path=d_path, d_rel=d_rel, hp_path=hp_p, hpd=hpd, up=up, up_cap=up_cap,
                      inv_cap=inv_cap, inv_hops=inv_hops, lat_grad=lat_grad, not_down=not_down, down2=down2,
                      beta=beta, neg_beta=neg_beta)
    rounds = RoundWeights(w0=w0, w1=w1n, b1=b1n, w2=w.w2, b2=w.b2, md10=[float(v) for v in w.md10],
                          bias=lambda r: _as(b, b.add(ref_bias, b.weight(w.tfrac[r], "ref_tfrac")), dt),
                          dtype=dt)
    for r in range(w.rounds):
        z = emit_round(b, lay, ins, rounds, r, z)

    sp = softmax(b, lay, z)
    (loads,) = to_links([b.mul(sp, d_path)])
    b.op("Slice", loads, i64c(0), i64c(L), i64c(1), out="link_load_bps")
    b.op("ReduceMax", b.mul(loads, up_cap), i64c(1), keepdims=0, out="mlu")
    b.op("Gather", reshape(sp, -1, P * K), "t_slot", axis=1, out="split")

    elem = {np.dtype(np.float32): f32, np.dtype(np.int32): TensorProto.INT32, np.dtype(np.int64): i64}
    inputs = [helper.make_tensor_value_info(demand, f32, ["B", P]),
              helper.make_tensor_value_info(link_up, f32, ["B", L]),
              helper.make_tensor_value_info(policy, f32, ["B", 4])]
    inputs += [helper.make_tensor_value_info(n, elem[a.dtype], list(a.shape)) for n, a in t.arrays.items()]
    outputs = [helper.make_tensor_value_info("split", f32, ["B", Np]),
               helper.make_tensor_value_info("link_load_bps", f32, ["B", L]),
               helper.make_tensor_value_info("mlu", f32, ["B"])]
    graph = helper.make_graph(b.nodes, "tellm_te_head_specialised", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tellm")
    model.ir_version = 8
    return model


def _as(b: GraphBuilder, x: str, dt) -> str:
    return x if dt == np.float32 else b.cast(x, helper.np_dtype_to_tensor_dtype(np.dtype(dt)))
