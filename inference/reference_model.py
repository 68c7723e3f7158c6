"""A reference ONNX model with the tellm TE interface: equal split over each pair's up paths.

It is a real, honest model of the contract (see the model card): it reads every input
the trained TE head reads, gives each pair an equal share on each of its paths whose links are all
up (or on all its paths when none is up), and computes the link loads and MLU it implies with
ScatterElements, exactly as the trained head must. Tests and benchmarks use it to exercise the
service without the trained model; ``--model`` swaps the trained head in.

Built with onnx.helper (no torch): ``python -m tellm.inference.reference_model OUT.onnx``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tellm.contract.vocabulary import POLICY_DIM


def build_equal_split_model(policy_dim: int = POLICY_DIM, opset: int = 18, variant: str = ""):
    """The reference model as an onnx.ModelProto; ``variant`` only changes its metadata (and so its
    bytes and version), which hot-reload tests use to tell two builds apart."""
    import onnx
    from onnx import TensorProto, helper

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("demand_bps", f32, ["P"]),
        helper.make_tensor_value_info("capacity_bps", f32, ["L"]),
        helper.make_tensor_value_info("latency_seconds", f32, ["L"]),
        helper.make_tensor_value_info("link_up", f32, ["L"]),
        helper.make_tensor_value_info("path_pair", i64, ["Np"]),
        helper.make_tensor_value_info("inc_path", i64, ["nnz"]),
        helper.make_tensor_value_info("inc_link", i64, ["nnz"]),
        helper.make_tensor_value_info("policy", f32, [policy_dim]),
    ]
    outputs = [
        helper.make_tensor_value_info("split", f32, ["Np"]),
        helper.make_tensor_value_info("link_load_bps", f32, ["L"]),
        helper.make_tensor_value_info("mlu", f32, [1]),
    ]
    zero = helper.make_tensor("zero_f", f32, [1], [0.0])
    one = helper.make_tensor("one_f", f32, [1], [1.0])

    def zeros_like(name: str, like: str) -> list:
        return [helper.make_node("Shape", [like], [name + "_shape"]),
                helper.make_node("ConstantOfShape", [name + "_shape"], [name], value=zero)]

    def scatter_add(out: str, base: str, index: str, values: str) -> onnx.NodeProto:
        return helper.make_node("ScatterElements", [base, index, values], [out], axis=0, reduction="add")

    nodes = [
        helper.make_node("Constant", [], ["zero"], value=zero),
        helper.make_node("Constant", [], ["one"], value=one),
        # A path is up when none of its links is down: count down links per path.
        helper.make_node("Gather", ["link_up", "inc_link"], ["entry_up"], axis=0),
        helper.make_node("Sub", ["one", "entry_up"], ["entry_down"]),
        *zeros_like("zeros_paths", "path_pair"),
        scatter_add("path_down", "zeros_paths", "inc_path", "entry_down"),
        helper.make_node("Equal", ["path_down", "zero"], ["path_ok_b"]),
        helper.make_node("Cast", ["path_ok_b"], ["path_ok"], to=f32),
        # Pairs with no up path spread over all their paths (traffic has to go somewhere).
        *zeros_like("zeros_pairs", "demand_bps"),
        scatter_add("pair_up", "zeros_pairs", "path_pair", "path_ok"),
        helper.make_node("Greater", ["pair_up", "zero"], ["pair_has_up"]),
        helper.make_node("Gather", ["pair_has_up", "path_pair"], ["path_pair_has_up"], axis=0),
        helper.make_node("Expand", ["one", "zeros_paths_shape"], ["ones_paths"]),
        helper.make_node("Where", ["path_pair_has_up", "path_ok", "ones_paths"], ["weight"]),
        scatter_add("pair_weight", "zeros_pairs", "path_pair", "weight"),
        helper.make_node("Gather", ["pair_weight", "path_pair"], ["path_denominator"], axis=0),
        helper.make_node("Div", ["weight", "path_denominator"], ["split"]),
        # Loads: each path carries split * its pair's demand on every one of its links.
        helper.make_node("Gather", ["demand_bps", "path_pair"], ["path_demand"], axis=0),
        helper.make_node("Mul", ["split", "path_demand"], ["path_flow"]),
        helper.make_node("Gather", ["path_flow", "inc_path"], ["entry_flow"], axis=0),
        *zeros_like("zeros_links", "capacity_bps"),
        scatter_add("link_load_bps", "zeros_links", "inc_link", "entry_flow"),
        # MLU over up links only (a down link carries nothing that matters).
        helper.make_node("Div", ["link_load_bps", "capacity_bps"], ["utilisation"]),
        helper.make_node("Mul", ["utilisation", "link_up"], ["utilisation_up"]),
        helper.make_node("ReduceMax", ["utilisation_up"], ["mlu"], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "tellm_equal_split_reference", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tellm.inference.reference_model")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    helper.set_model_props(model, {"tellm_model": "equal-split-reference", "variant": variant})
    onnx.checker.check_model(model, full_check=True)
    return model


def write_equal_split_model(path: str | Path, policy_dim: int = POLICY_DIM, variant: str = "") -> Path:
    """Write the reference model to ``path`` atomically (write, then rename)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(build_equal_split_model(policy_dim, variant=variant), str(tmp))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the equal-split reference ONNX model (tellm TE interface).")
    p.add_argument("out", type=Path, help="output .onnx file")
    p.add_argument("--policy-dim", type=int, default=POLICY_DIM)
    p.add_argument("--variant", default="", help="metadata tag (changes the bytes, not the behaviour)")
    args = p.parse_args(argv)
    print(write_equal_split_model(args.out, args.policy_dim, args.variant))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
