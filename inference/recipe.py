"""The training recipe (YAML): typed sections with their defaults, strict keys (no torch).

A recipe is a mapping with ``name``, ``seed``, ``paths`` (PathsConfig), ``data`` (DataConfig),
``model`` (the TE head's ModelConfig, checked where torch is) and ``train`` (TrainConfig). Every
section is read through ``parse_recipe``: an unknown or misspelled key, a value of the wrong type or
out of range is a ``RecipeError`` naming the key, and each default lives here once. The mapping
itself is kept as read (``Recipe.raw``): checkpoints and model cards record it.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import yaml

SECTIONS = ("name", "seed", "paths", "data", "model", "train")


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the field."""


@dataclass(frozen=True)
class PathsConfig:
    """Candidate paths of every training and validation topology (tecore.compute_paths)."""

    k: int = 4
    strategy: str = "shortest"

    def __post_init__(self):
        _require(self.k >= 1, "paths.k", "must be >= 1")


@dataclass(frozen=True)
class DataConfig:
    """Which topologies train, validate and stay held out, and the TMs generated for each."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    held_out: tuple[str, ...]
    excluded: tuple[str, ...] = ()  # near-duplicates of held-out graphs, kept out of training too
    families: tuple[str, ...] = ("gravity",)
    tms_per_family: int = 5
    max_nodes: int = 50

    def __post_init__(self):
        for key in ("train", "validation", "held_out"):
            _require(bool(getattr(self, key)), f"data.{key}", "must be a non-empty list of topology names")
        banned = {n.lower() for n in self.held_out + self.excluded}
        for key in ("train", "validation"):
            leak = [n for n in getattr(self, key) if n.lower() in banned]
            if leak:
                raise RecipeError(f"data.{key} contains held-out/excluded topologies: {', '.join(leak)}")
        overlap = {n.lower() for n in self.train} & {n.lower() for n in self.validation}
        if overlap:
            raise RecipeError(f"topologies in both train and validation: {', '.join(sorted(overlap))}")
        _require(self.tms_per_family >= 1, "data.tms_per_family", "must be >= 1")
        _require(self.max_nodes >= 2, "data.max_nodes", "must be >= 2")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, loss and augmentation of one training run (inference/train.py)."""

    # Budget: the run stops at whichever ends first; learning rate and temperature follow it.
    steps: int = 1000
    time_limit_seconds: float = 1e9
    batch_instances: int = 16
    # AdamW with linear warm-up, then cosine decay to lr * lr_min_fraction.
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    lr_min_fraction: float = 0.02
    grad_clip: float = 1.0
    # Loss: smooth max temperature (relative, annealed), weight of earlier refinement rounds.
    tau_start: float = 0.1
    tau_end: float = 0.005
    round_loss_decay: float = 0.6
    train_rounds: tuple[int, ...] | None = None  # refinement rounds drawn per step; None: the model's
    sweep_rounds: tuple[int, ...] | None = None  # rounds validated after training; None: the model's
    val_every: int = 200
    # Augmentation of each instance.
    demand_noise_sigma: float = 0.5
    sparsity_prob: float = 0.2
    capacity_aug_prob: float = 0.5
    capacity_choices: tuple[float, ...] = (1.0, 2.5, 4.0, 10.0)
    fail_prob: float = 0.3
    max_failed_links: int = 2
    # Policy conditioning: share of instances with a non-zero policy, and the equal-split MLU range
    # (log-uniform) each instance's TM is scaled to.
    policy_prob: float = 0.5
    mlu_scale_range: tuple[float, float] = (0.05, 1.5)

    def __post_init__(self):
        for key in ("steps", "batch_instances", "warmup_steps", "val_every", "max_failed_links"):
            _require(getattr(self, key) >= 1, f"train.{key}", "must be >= 1")
        for key in ("time_limit_seconds", "lr", "grad_clip", "tau_start", "tau_end", "round_loss_decay"):
            _require(getattr(self, key) > 0, f"train.{key}", "must be > 0")
        for key in ("weight_decay", "demand_noise_sigma"):
            _require(getattr(self, key) >= 0, f"train.{key}", "must be >= 0")
        for key in ("lr_min_fraction", "sparsity_prob", "capacity_aug_prob", "fail_prob", "policy_prob"):
            _require(0 <= getattr(self, key) <= 1, f"train.{key}", "must be between 0 and 1")
        for key in ("train_rounds", "sweep_rounds"):
            value = getattr(self, key)
            _require(value is None or (value and min(value) >= 1), f"train.{key}",
                     "must be a non-empty list of round counts >= 1")
        _require(bool(self.capacity_choices) and min(self.capacity_choices) > 0, "train.capacity_choices",
                 "must be a non-empty list of factors > 0")
        lo, hi = self.mlu_scale_range
        _require(0 < lo <= hi, "train.mlu_scale_range", "must be [low, high] with 0 < low <= high")


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int
    paths: PathsConfig
    data: DataConfig
    model: dict  # ModelConfig's fields (torch side: train.py reads them with typed_section)
    train: TrainConfig
    raw: dict  # the mapping as read, recorded in checkpoints and model cards


def parse_recipe(raw: dict) -> Recipe:
    """The typed view of a recipe mapping; RecipeError names the first bad key."""
    if not isinstance(raw, dict):
        raise RecipeError("a recipe is a YAML mapping")
    _no_unknown_keys(raw, SECTIONS, "")
    for key in ("data", "model", "train"):
        if not isinstance(raw.get(key), dict):
            raise RecipeError(f"missing mapping {key!r}")
    return Recipe(name=_check("name", str, raw.get("name", "")), seed=_check("seed", int, raw.get("seed", 0)),
                  paths=typed_section(PathsConfig, raw.get("paths", {}), "paths"),
                  data=typed_section(DataConfig, raw["data"], "data"), model=raw["model"],
                  train=typed_section(TrainConfig, raw["train"], "train"), raw=raw)


def load_recipe(path: str | Path) -> dict:
    """Read and check a recipe file; returns the mapping (see ``parse_recipe`` for its typed view)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read recipe ({exc})") from None
    try:
        parse_recipe(raw)
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    return raw


def apply_overrides(recipe: dict, items: list[str]) -> dict:
    """``SECTION.KEY=YAML`` overrides (``--set``), checked like the file itself."""
    for item in items:
        key, _, val = item.partition("=")
        section, _, name = key.partition(".")
        if not name or section not in recipe or not isinstance(recipe[section], dict):
            raise RecipeError(f"--set {item!r}: expected SECTION.KEY=VALUE with an existing section")
        recipe[section][name] = yaml.safe_load(val)
    parse_recipe(recipe)
    return recipe


# ---------------------------------------------------------------- checking
def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise RecipeError(f"{key} {message}")


def _no_unknown_keys(raw: dict, known, section: str) -> None:
    prefix = f"{section}." if section else ""
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"known keys: {', '.join(known)}"
            raise RecipeError(f"{prefix}{key}: unknown recipe key ({hint})")


def typed_section(cls, raw, section: str):
    """The dataclass ``cls`` from the mapping ``raw`` of recipe section ``section``, keys and types checked."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{section} must be a mapping")
    spec = {f.name: f for f in fields(cls)}
    _no_unknown_keys(raw, tuple(spec), section)
    hints = typing.get_type_hints(cls)
    missing = [name for name, f in spec.items() if f.default is MISSING and name not in raw]
    if missing:
        raise RecipeError(f"{section}.{missing[0]} is missing")
    return cls(**{name: _check(f"{section}.{name}", hints[name], value) for name, value in raw.items()})


def _check(key: str, tp, value):
    """``value`` as type ``tp`` (bool, int, float, str, tuple[X, ...], tuple[X, Y], X | None) or RecipeError;
    other annotations are left to the dataclass itself."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _check(key, next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise RecipeError(f"{key}: expected a list of {len(item_types)} values, got {value!r}")
        return tuple(_check(f"{key}[{i}]", t, v) for i, (t, v) in enumerate(zip(item_types, value)))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if (tp is str and isinstance(value, str)) or (tp is bool and isinstance(value, bool)):
        return value
    if tp not in (bool, int, float, str):
        return value
    raise RecipeError(f"{key}: expected {tp.__name__}, got {value!r}")
