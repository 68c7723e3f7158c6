"""benchmarks/cpu_mlp_floor.py: the head's MLP FLOPs per path, from the shipped model's weights."""

from __future__ import annotations

import onnx

from tellm.inference.artifacts import DEFAULT_MODEL_PATH
from tellm.inference.specialise import FoldedWeights

from ..benchmark_support import load_benchmark

floor = load_benchmark("cpu_mlp_floor")


def test_mlp_flops_per_path_counts_every_layer_of_every_pass():
    w = FoldedWeights.from_onnx(onnx.load(str(DEFAULT_MODEL_PATH)))
    flops, passes = floor.mlp_flops_per_path(w)
    h1, h2 = w.refine[0].shape[1], w.refine[3].shape[1]
    init = 2 * (6 * h1 + h1 * h2 + h2)
    refine = 2 * (16 * h1 + h1 * h2 + h2)
    assert passes == w.rounds + 1 and flops == init + w.rounds * refine
    assert flops == 174_976  # the shipped head: 64 wide, 16 rounds


def test_rate_is_positive_and_counts_two_flops_per_multiply_add():
    assert floor.sgemm_rate_flops(256, 8, 8, runs=3) > 1e6
