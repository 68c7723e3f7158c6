"""The TE head's ONNX input builder and the torch-free import rule (fast, numpy only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tecore import compute_paths, generate, load_topology
from tellm.contract.onnx_io import FeatureError, onnx_inputs
from tellm.contract.vocabulary import INPUT_NAMES


@pytest.fixture(scope="module")
def abilene(data_dir):
    topo = load_topology("Abilene")
    return topo, compute_paths(topo, k=4)


def test_inputs_follow_the_contract(abilene):
    topo, paths = abilene
    tm = generate(topo, "gravity", 1, seed=3)[0]
    x = onnx_inputs(topo, paths, tm)
    assert tuple(x) == INPUT_NAMES
    assert x["demand_bps"].dtype == np.float32 and x["demand_bps"].shape == (paths.num_pairs,)
    for name in ("capacity_bps", "latency_seconds", "link_up"):
        assert x[name].dtype == np.float32 and x[name].shape == (topo.num_links,)
    for name in ("path_pair", "inc_path", "inc_link"):
        assert x[name].dtype == np.int64
    assert x["policy"].shape == (4,) and not x["policy"].any()
    # Paths of a pair are contiguous and in pair order; incidence rebuilds the PathSet's CSR matrix.
    assert np.all(np.diff(x["path_pair"]) >= 0)
    dense = np.zeros((paths.num_paths, topo.num_links))
    dense[x["inc_path"], x["inc_link"]] = 1
    assert np.array_equal(dense, paths.incidence.toarray())
    np.testing.assert_allclose(x["demand_bps"], tm.pair_demands(paths.pairs).astype(np.float32))
    # A per-pair vector gives the same inputs as the dense matrix.
    y = onnx_inputs(topo, paths, tm.pair_demands(paths.pairs))
    assert np.array_equal(x["demand_bps"], y["demand_bps"])


@pytest.mark.parametrize("kwargs, match", [
    ({"demand_bps": np.ones(3)}, "demand_bps has shape"),
    ({"demand_bps": -np.ones((11, 11))}, "finite and >= 0"),
    ({"link_up": np.ones(5)}, "link_up has shape"),
    ({"link_up": np.full(28, 0.5)}, "0 \\(down\\) or 1"),
    ({"policy": [0, 1]}, "policy must be 4"),
])
def test_bad_inputs_are_named(abilene, kwargs, match):
    topo, paths = abilene
    args = {"demand_bps": np.ones(paths.num_pairs)} | kwargs
    with pytest.raises(FeatureError, match=match):
        onnx_inputs(topo, paths, **args)


def test_inference_package_imports_without_torch():
    code = ("import sys, tellm.inference, tellm.contract.onnx_io, tellm.inference.session, tellm.inference.server, "
            "tellm.inference.recipe, tellm.commands.eval, tellm.commands.model, tellm.commands.serve; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
