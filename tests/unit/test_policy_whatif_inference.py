"""evaluate_policy through the real inference gRPC service (Route with an explicit policy vector).

Needs the inference service: skipped with a reason when it is not installed. It serves the
equal-split reference model, so the numbers are that model's, not the TE head's:
the test checks the plumbing (what-if goes through Route and says so; its objective is recomputed
from the returned split) and that an unreachable service falls back to the LP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..policy_helpers import recorded_states

server_mod = pytest.importorskip("tellm.inference.server", reason="the inference service is not installed")
ref = pytest.importorskip("tellm.inference.reference_model", reason="the inference service is not installed")
onnx = pytest.importorskip("onnx")

from tecore.objectives import evaluate_objective  # noqa: E402
from tellm.policy.state import parse_controller_state  # noqa: E402
from tellm.policy.tools import WhatIf, topology_from_state  # noqa: E402


def test_whatif_routes_through_inference(tmp_path):
    model = tmp_path / "eq.onnx"
    onnx.save(ref.build_equal_split_model(), str(model))
    srv = server_mod.InferenceServer(server_mod.ServerConfig(model_path=Path(model), port=0, metrics_port=None,
                                                             watch_interval_seconds=0))
    port = srv.start()
    try:
        st = parse_controller_state(recorded_states()[-1])
        w = WhatIf(inference_address=f"127.0.0.1:{port}")
        r = w.evaluate(st, "latency_aware", {"weight": 0.5})
        assert r["evaluated_with"].startswith("model ") and f"127.0.0.1:{port}" in r["evaluated_with"]
        # Equal split over each pair's 4 paths, scored by tecore under the policy.
        reg = w._topo_paths(st)
        tm = st.traffic_matrix_bps
        demand = tm[reg.paths.pairs[:, 0], reg.paths.pairs[:, 1]]
        eq = 1.0 / np.repeat(reg.paths.paths_per_pair, reg.paths.paths_per_pair)
        v = evaluate_objective(topology_from_state(st.topology), reg.paths, demand, eq, 0.5, 0.0)
        assert r["objective"] == pytest.approx(v.objective, rel=1e-4)
    finally:
        srv.stop(0)
    r = WhatIf(inference_address=f"127.0.0.1:{port}", inference_timeout_seconds=0.3).evaluate(st, "min_mlu", None)
    assert r["evaluated_with"] == "tecore per-policy LP (HiGHS); inference service not reachable"
