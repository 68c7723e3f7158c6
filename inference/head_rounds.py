"""The TE head's refinement round, written once for every graph layout.

Both inference graphs (the generic one, padded_graph.py, and the one specialised to a topology,
specialise.py) compute the same rounds; they differ only in how values move between paths, links
and pairs. A graph hands those moves in as a ``Layout`` and the per-run tensors the rounds read as
``RoundInputs``; ``softmax`` and ``emit_round`` then write the nodes of the shared math.

Shapes, with B the batch (1 in the generic graph) and per-path tensors [B, P, K, 1]:
per-link rows are [B, L + 1] (the virtual link last), per-pair values [B, P, 1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from onnx import TensorProto, helper

from .graph_builder import SURGE_Q, TINY, GraphBuilder


@dataclass(frozen=True)
class Layout:
    """The layout-specific nodes of a round."""

    #: (kind, per-path x) -> the Max/Min/Sum over each pair's candidates, [B, P, 1, 1].
    pair: Callable[[str, str], str]
    #: per-path columns -> per-link sums, one [B, L + 1] row each.
    to_links: Callable[[list[str]], list[str]]
    #: (per-link rows, "Sum" or "Max") -> the sum or max over each path's links, per path, one each.
    over_paths: Callable[[list[str], str], list[str]]
    #: a per-batch [B, 1] value -> a shape that broadcasts against per-path tensors.
    per_batch: Callable[[str], str]
    #: per-path: 0, or -PAD on an empty candidate slot (keeps empty slots out of the softmax).
    pad_neg: str


@dataclass(frozen=True)
class RoundInputs:
    """Per-run tensors (names in the graph) that every round reads."""

    static: str  # [B, P, K, 6] static path features
    d_path: str  # demand per pair, per-path broadcastable
    d_rel: str  # demand / the TM's largest demand
    hp_path: str  # the policy's surge weight h, per-path broadcastable
    hpd: str  # h x largest demand, per-link broadcastable
    up: str  # [B, L + 1] link up (0/1)
    up_cap: str  # up / capacity
    inv_cap: str  # 1 / capacity
    inv_hops: str  # per path, 1 / hops
    lat_grad: str  # per path, the latency term of the gradient
    not_down: str  # per path, 1 - down
    down2: str  # per path, 2 x down (+PAD on empty slots)
    beta: str  # the soft-max sharpness and its negative (constants)
    neg_beta: str


@dataclass(frozen=True)
class RoundWeights:
    """The refine MLP as graph names, plus each round's own numbers (steps folded into its last layer)."""

    w0: str  # first layer, [16, H1]
    w1: str
    b1: str
    w2: Sequence[np.ndarray]  # per round, [H2, 1], step folded
    b2: Sequence[np.ndarray]
    md10: Sequence[float]  # per round, mirror-descent step x 10
    bias: Callable[[int], str]  # round -> the first layer's bias (policy knobs and round fraction folded)
    #: the MLP's float type: float32, or float16 (w0, w1, b1, bias in it; the features cast in, the
    #: correction cast back to float32)
    dtype: type = np.float32


def softmax(b: GraphBuilder, lay: Layout, z: str) -> str:
    """Each pair's softmax over its candidates (empty slots get 0)."""
    zz = b.add(z, lay.pad_neg)
    e = b.op("Exp", b.sub(zz, lay.pair("Max", zz)))
    return b.div(e, lay.pair("Sum", e))


def emit_round(b: GraphBuilder, lay: Layout, x: RoundInputs, w: RoundWeights, r: int, z: str) -> str:
    """Round ``r``: observe the loads of softmax(z), price the links, correct the logits; the new z."""
    split = softmax(b, lay, z)
    flow = b.mul(split, x.d_path)
    f = b.mul(split, x.d_rel)
    f3 = b.mul(b.mul(f, f), f)
    loads, fq4, fq3 = lay.to_links([flow, b.mul(f3, f), f3])
    surge_rel = b.div(fq4, b.maxc(fq3, TINY))
    eff = b.mul(b.add(loads, b.mul(x.hpd, surge_rel)), x.up_cap)
    m = b.maxc(b.reduce("Max", eff, 1, keep=1), TINY)  # [B, 1] the round's MLU
    m_p = lay.per_batch(m)
    ur = b.div(eff, m)
    hot = b.mul(b.op("Exp", b.add(b.mul(ur, x.beta), x.neg_beta)), x.up)
    w_cap = b.mul(b.div(hot, b.maxc(b.reduce("Sum", hot, 1, keep=1), TINY)), x.inv_cap)
    top_l = b.op("Pow", b.maxc(surge_rel, 1.0e-12), b.const(1.0 - SURGE_Q))
    s_price, s_ur, s_top = lay.over_paths([w_cap, ur, b.mul(w_cap, top_l)], "Sum")
    (bott,) = lay.over_paths([ur], "Max")
    surge_price = b.mul(b.mul(x.hp_path, f3), s_top)
    price = b.add(s_price, surge_price)
    lat_rel = b.minc(b.div(x.lat_grad, m_p), 10.0)
    grad_rel = b.add(b.minc(b.div(b.mul(x.d_path, price), m_p), 10.0), lat_rel)
    adv = b.sub(grad_rel, lay.pair("Sum", b.mul(split, grad_rel)))
    bott_min = lay.pair("Min", b.add(bott, x.down2))
    pmax = b.maxc(lay.pair("Max", b.mul(price, x.not_down)), TINY)
    feats = b.op("Concat", x.static, adv, grad_rel, bott, b.sub(bott, bott_min),
                 b.op("Exp", b.add(b.mul(bott, x.beta), x.neg_beta)), b.mul(s_ur, x.inv_hops), split,
                 b.minc(b.div(price, pmax), 2.0), lat_rel, b.div(surge_price, b.maxc(price, TINY)), axis=3)
    dt = np.dtype(w.dtype)
    if dt != np.float32:
        feats = b.cast(feats, helper.np_dtype_to_tensor_dtype(dt))
    h = b.dense(feats, w.w0, w.bias(r), True, dt)
    h = b.dense(h, w.w1, w.b1, True, dt)
    corr = b.dense(h, b.weight(w.w2[r].astype(dt), "ref_w2"), b.weight(w.b2[r].astype(dt), "ref_b2"), False, dt)
    if dt != np.float32:
        corr = b.cast(corr, TensorProto.FLOAT)
    return b.sub(b.add(z, corr), b.mul(adv, b.const(float(w.md10[r]))))
