"""The training recipe's typed sections: unknown keys, wrong types and bad values are errors naming the key."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from tellm.inference.recipe import (DataConfig, RecipeError, TrainConfig, apply_overrides, load_recipe, parse_recipe,
                                    typed_section)

from .. import ROOT

RECIPES = ROOT / "inference" / "recipes"
TINY = yaml.safe_load((RECIPES / "tiny.yaml").read_text())


def tiny(**sections) -> dict:
    doc = copy.deepcopy(TINY)
    for name, changes in sections.items():
        doc[name].update(changes)
    return doc


def test_shipped_recipes_parse_with_their_values():
    for path in RECIPES.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        r = parse_recipe(load_recipe(path))
        assert r.train.steps == raw["train"]["steps"] and r.train.lr == raw["train"]["lr"]
        assert r.train.train_rounds == tuple(raw["train"]["train_rounds"])
        assert r.data.train == tuple(raw["data"]["train"]) and r.paths.k == raw["paths"]["k"]


def test_defaults_fill_what_the_recipe_leaves_out():
    doc = copy.deepcopy(TINY)
    doc["train"] = {"steps": 3}
    r = parse_recipe(doc)
    assert r.train == TrainConfig(steps=3)
    assert r.train.train_rounds is None and r.train.capacity_choices == (1.0, 2.5, 4.0, 10.0)


@pytest.mark.parametrize("section, key, match", [
    ("train", "warmup_step", r"train\.warmup_step: unknown recipe key \(did you mean train\.warmup_steps\?\)"),
    ("train", "fail_probability", r"train\.fail_probability: unknown .*did you mean train\.fail_prob"),
    ("data", "tms_per_famly", r"data\.tms_per_famly: unknown .*did you mean data\.tms_per_family"),
    ("paths", "kk", r"paths\.kk: unknown"),
])
def test_misspelled_key_is_an_error_naming_it(section, key, match):
    with pytest.raises(RecipeError, match=match):
        parse_recipe(tiny(**{section: {key: 1}}))


def test_unknown_top_level_key_is_an_error():
    doc = copy.deepcopy(TINY)
    doc["traning"] = {}
    with pytest.raises(RecipeError, match=r"traning: unknown recipe key \(did you mean train\?\)"):
        parse_recipe(doc)


@pytest.mark.parametrize("changes, match", [
    ({"steps": "many"}, r"train\.steps: expected int, got 'many'"),
    ({"steps": 2.5}, r"train\.steps: expected int"),
    ({"lr": True}, r"train\.lr: expected float"),
    ({"train_rounds": 4}, r"train\.train_rounds: expected a list"),
    ({"capacity_choices": [1.0, "x"]}, r"train\.capacity_choices\[1\]: expected float"),
    ({"mlu_scale_range": [0.1]}, r"train\.mlu_scale_range: expected a list of 2 values"),
    ({"mlu_scale_range": [1.5, 0.1]}, r"train\.mlu_scale_range must be"),
    ({"fail_prob": 1.5}, r"train\.fail_prob must be between 0 and 1"),
    ({"batch_instances": 0}, r"train\.batch_instances must be >= 1"),
])
def test_wrong_types_and_values_are_errors(changes, match):
    with pytest.raises(RecipeError, match=match):
        parse_recipe(tiny(train=changes))


def test_ints_are_accepted_where_floats_are_expected():
    assert parse_recipe(tiny(train={"lr": 1, "grad_clip": 2})).train.lr == 1.0


def test_load_recipe_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny(train={"warmup": 5})))
    with pytest.raises(RecipeError, match=rf"^{re.escape(str(bad))}: train\.warmup: unknown .*train\.warmup_steps"):
        load_recipe(bad)


def test_overrides_are_checked_like_the_file():
    assert parse_recipe(apply_overrides(copy.deepcopy(TINY), ["train.steps=9"])).train.steps == 9
    with pytest.raises(RecipeError, match=r"train\.stpes: unknown"):
        apply_overrides(copy.deepcopy(TINY), ["train.stpes=9"])
    with pytest.raises(RecipeError, match="existing section"):
        apply_overrides(copy.deepcopy(TINY), ["nosuch.steps=9"])


def test_typed_section_checks_any_dataclass():
    with pytest.raises(RecipeError, match=r"data\.train is missing"):
        typed_section(DataConfig, {"validation": ["a"], "held_out": ["b"]}, "data")


def test_cli_refuses_a_misspelled_key_before_building_the_dataset(tmp_path, capsys):
    pytest.importorskip("torch")
    from tellm.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny(model={"hiden": 8})))
    assert main(["train", "--recipe", str(bad), "--out", str(tmp_path / "run")]) != 0
    assert "model.hiden: unknown recipe key (did you mean model.hidden?)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "dataset.npz").exists()
