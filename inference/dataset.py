"""Training data for the TE head: topologies, candidate paths and generated TMs in one .npz (numpy only).

The file is built here with tecore (paths, TM generators, and the LP optimum of the *validation*
instances, used only to report progress -- never as a training label) so that the GPU side needs only
torch and numpy. Topology lists come from the recipe (train / validation / held-out / excluded);
recipe.py refuses a recipe whose training or validation lists touch the held-out or excluded ones.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tellm.contract.onnx_io import incidence_arrays

from .recipe import RecipeError, parse_recipe


# (latency_weight, headroom_fraction) of the per-policy validation instances.
VALIDATION_POLICIES = ((0.5, 0.0), (0.0, 0.3))
VALIDATION_POLICY_TMS = 3
VALIDATION_MLU = 0.6
FIELDS = ("capacity_bps", "latency_seconds", "reverse_link", "path_pair", "inc_path", "inc_link", "tms", "lp_mlu",
          "pol_lp", "pol_scale")


@dataclass(frozen=True)
class TopologyData:
    name: str
    capacity_bps: np.ndarray  # float32 [L]
    latency_seconds: np.ndarray  # float32 [L]
    reverse_link: np.ndarray  # int64 [L]: id of the opposite direction, -1 if none
    path_pair: np.ndarray  # int64 [Np]
    inc_path: np.ndarray  # int64 [nnz]
    inc_link: np.ndarray  # int64 [nnz]
    tms: np.ndarray  # float32 [T, P]: pair demands, each TM divided by its largest entry
    lp_mlu: np.ndarray  # float64 [T]: LP optimum of each TM (validation only; NaN elsewhere)
    # Per-policy validation (VALIDATION_POLICIES, first VALIDATION_POLICY_TMS TMs; NaN elsewhere): the
    # policy LP's objective with the TM scaled by pol_scale (bit/s per unit of `tms`), chosen so that
    # the min-MLU optimum is VALIDATION_MLU (latency_aware is not scale-invariant).
    pol_lp: np.ndarray  # float64 [T, len(VALIDATION_POLICIES)]
    pol_scale: np.ndarray  # float64 [T]

    @property
    def num_pairs(self) -> int:
        return int(self.tms.shape[1])


def _reverse_links(topo) -> np.ndarray:
    li = topo.link_index
    return np.array([li.get((int(v), int(u)), -1) for u, v in zip(topo.src, topo.dst)], dtype=np.int64)


def build_topology_data(name: str, recipe: dict, with_lp: bool) -> TopologyData:
    from tecore import compute_paths, generate, load_topology, solve_min_mlu
    from tecore.objectives import solve_policy_lp

    r = parse_recipe(recipe)
    topo = load_topology(name)
    if topo.num_nodes > r.data.max_nodes:
        raise RecipeError(f"{name}: {topo.num_nodes} nodes, more than data.max_nodes={r.data.max_nodes}")
    paths = compute_paths(topo, k=r.paths.k, strategy=r.paths.strategy, workers=1)
    seed = r.seed * 1_000_003 + zlib.crc32(name.encode())  # stable across runs
    tms = []
    for f, family in enumerate(r.data.families):
        for tm in generate(topo, family, r.data.tms_per_family, seed=seed + f):
            d = tm.pair_demands(paths.pairs)
            dmax = d.max()
            if dmax > 0:
                tms.append(d / dmax)
    tms_arr = np.asarray(tms, dtype=np.float32)
    lp = np.full(tms_arr.shape[0], np.nan)
    pol_lp = np.full((tms_arr.shape[0], len(VALIDATION_POLICIES)), np.nan)
    pol_scale = np.full(tms_arr.shape[0], np.nan)
    if with_lp:
        cap = topo.capacity_bps
        for i, d in enumerate(tms_arr):
            # Same float32 demands the model sees, in bit/s relative to the largest capacity.
            lp[i] = solve_min_mlu(topo, paths, d.astype(np.float64) * float(cap.max())).mlu
            if i < VALIDATION_POLICY_TMS and lp[i] > 0:
                pol_scale[i] = float(cap.max()) * VALIDATION_MLU / lp[i]
                for j, (lam, h) in enumerate(VALIDATION_POLICIES):
                    pol_lp[i, j] = solve_policy_lp(topo, paths, d.astype(np.float64) * pol_scale[i],
                                                   latency_weight=lam, headroom_fraction=h).value.objective
    path_pair, inc_path, inc_link = incidence_arrays(paths)
    return TopologyData(name, topo.capacity_bps.astype(np.float32), topo.latency_seconds.astype(np.float32),
                        _reverse_links(topo), path_pair, inc_path, inc_link, tms_arr, lp, pol_lp, pol_scale)


def prepare(recipe: dict, out_file: str | Path, progress: bool = True) -> Path:
    """Build the dataset file for the recipe's train and validation topologies."""
    out_file = Path(out_file)
    data = parse_recipe(recipe).data
    names = [(n, "train") for n in data.train] + [(n, "val") for n in data.validation]
    arrays: dict[str, np.ndarray] = {}
    it = names
    if progress:
        from rich.progress import track

        it = track(names, description="dataset", transient=True)
    for i, (name, role) in enumerate(it):
        td = build_topology_data(name, recipe, with_lp=(role == "val"))
        for field in FIELDS:
            arrays[f"{i}/{field}"] = getattr(td, field)
        arrays[f"{i}/name"] = np.array(name)
        arrays[f"{i}/role"] = np.array(role)
    arrays["count"] = np.array(len(names))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out_file)
    return out_file


def load(file: str | Path) -> tuple[list[TopologyData], list[TopologyData]]:
    """(train, validation) topology data from a dataset file."""
    train, val = [], []
    with np.load(file, allow_pickle=False) as z:
        for i in range(int(z["count"])):
            td = TopologyData(str(z[f"{i}/name"]), *(z[f"{i}/{f}"] for f in FIELDS))
            (train if str(z[f"{i}/role"]) == "train" else val).append(td)
    return train, val
