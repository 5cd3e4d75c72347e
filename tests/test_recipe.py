"""Study recipes: loading the shipped ones, one-line errors naming file and key, the hash."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.errors import UserError
from search.tuning import recipe as recipes

ROOT = Path(__file__).resolve().parents[1]

SPACE = "lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"


def base_recipe() -> dict[str, Any]:
    return {
        "name": "tiny",
        "data": {"name": "digits", "classes": [5, 6, 7, 8, 9]},
        "model": {"name": "cnn", "weights": "pretrained:digits-0-4"},
        "space": "space.yaml",
        "epochs": 2,
        "objective": "pareto",
        "trials": 3,
        "timeout": 60,
        "sampler": "random",
        "pruner": {"name": "pareto-sha", "eta": 2, "min_resource": 1},
        "seed": 0,
        "baseline": {"optimizer": "adam", "lr": 0.003, "batch_size": 64},
    }


def write(tmp_path: Path, raw: dict[str, Any], name: str = "tiny.yaml") -> Path:
    space = tmp_path / "space.yaml"
    if not space.exists():
        space.write_text(SPACE, encoding="utf-8")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def load_with(tmp_path: Path, **changes: Any) -> recipes.Recipe:
    raw = base_recipe()
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return recipes.load(write(tmp_path, raw))


# --- the shipped recipes --------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path: Path) -> None:
    recipe = recipes.load(path)
    assert recipe.name == path.stem
    assert recipe.space is not None and recipe.space.is_file()
    assert recipe.objective in recipes.OBJECTIVES and recipe.sampler in recipes.SAMPLERS
    assert recipe.pruner["name"] in recipes.PRUNERS
    assert len(recipe.hash()) == 16


def test_shipped_digits_recipe_reads_as_documented() -> None:
    recipe = recipes.load(ROOT / "studies" / "digits.yaml")
    assert recipe.data == {"name": "digits", "classes": [5, 6, 7, 8, 9]}
    assert recipe.model == {"name": "cnn", "weights": "pretrained:digits-0-4"}
    assert recipe.space == (ROOT / "spaces" / "default.yaml").resolve()
    assert (recipe.epochs, recipe.trials, recipe.timeout) == (10, 60, 180)
    assert recipe.pruner == {"name": "pareto-sha", "eta": 3, "min_resource": 0.111,
                             "resource": "fraction"}
    assert recipe.floor == {"below_baseline": 0.05}
    assert recipe.data_spec().classes == (5, 6, 7, 8, 9)
    assert recipe.model_spec().weights == "pretrained:digits-0-4"


def test_shipped_mnist_recipe_the_default_reads_as_documented() -> None:
    recipe = recipes.load(ROOT / "studies" / "mnist.yaml")
    assert recipe.data == {"name": "mnist5k", "classes": [5, 6, 7, 8, 9], "image_size": 14}
    assert recipe.model == {"name": "cnn", "width": 16, "weights": "pretrained:mnist5k-0-4"}
    assert recipe.space == (ROOT / "spaces" / "default.yaml").resolve()
    assert (recipe.epochs, recipe.trials, recipe.timeout) == (10, 60, 300)
    assert recipe.floor == {"below_baseline": 0.05} and recipe.probes is True
    assert recipe.baseline == {"optimizer": "adam", "lr": 0.001, "batch_size": 64,
                               "precision": "fp32"}
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "STUDY ?= studies/mnist.yaml" in makefile  # `make run` runs it


def test_defaults_and_the_default_storage_next_to_the_recipe(tmp_path: Path) -> None:
    raw = {"name": "plain", "space": "space.yaml"}
    recipe = recipes.load(write(tmp_path, raw, "plain.yaml"))
    assert (recipe.objective, recipe.sampler, recipe.epochs, recipe.seed) == (
        "pareto", "tpe", 10, 0)
    assert recipe.pruner == {"name": "pareto-sha"}
    assert recipe.storage == f"sqlite:///{tmp_path / 'plain.db'}"
    assert recipe.data == {"name": "digits"} and recipe.model == {"name": "cnn"}


def test_time_to_accuracy_defaults_to_the_median_pruner(tmp_path: Path) -> None:
    recipe = load_with(tmp_path, objective="time-to-accuracy", target=0.9, pruner=None)
    assert recipe.pruner == {"name": "median"} and recipe.target == 0.9


# --- one error per problem, naming file and key ---------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"sampel": "tpe"}, "unknown key 'sampel' (valid: "),
    ({"name": ""}, "name: must be a non-empty string, got ''"),
    ({"objective": "fast"}, "objective: must be one of pareto, time-to-accuracy, got 'fast'"),
    ({"objective": "time-to-accuracy"},
     "target: time-to-accuracy needs a target accuracy in (0, 1], got None"),
    ({"objective": "time-to-accuracy", "target": 1.01},
     "target: time-to-accuracy needs a target accuracy in (0, 1], got 1.01"),
    ({"objective": "time-to-accuracy", "target": "high"},
     "target: time-to-accuracy needs a target accuracy in (0, 1], got 'high'"),
    ({"target": 0.9}, "target: only the time-to-accuracy objective takes a target, got 0.9"),
    ({"sampler": "bayes"}, "sampler: unknown sampler (valid: tpe, nsga2, random, gp, qmc, "
                           "grid), got 'bayes'"),
    ({"pruner": "asha"}, "pruner: unknown pruner (valid: "),
    ({"pruner": {"eta": 3}}, "pruner: unknown pruner (valid: "),
    ({"pruner": "median"}, "pruner: a pareto study takes pareto-sha or none"),
    ({"objective": "time-to-accuracy", "target": 0.9, "pruner": "pareto-sha"},
     "pruner: pareto-sha is for pareto studies"),
    ({"epochs": 0}, "epochs: must be an integer >= 1, got 0"),
    ({"epochs": "ten"}, "epochs: must be an integer >= 1, got 'ten'"),
    ({"epochs": 2.5}, "epochs: must be an integer >= 1, got 2.5"),
    ({"epochs": True}, "epochs: must be an integer >= 1, got True"),
    ({"trials": 0}, "trials: must be an integer >= 1, got 0"),
    ({"trials": -3}, "trials: must be an integer >= 1, got -3"),
    ({"trials": "many"}, "trials: must be an integer >= 1, got 'many'"),
    ({"trials": 1.5}, "trials: must be an integer >= 1, got 1.5"),
    ({"timeout": 0}, "timeout: must be a number of seconds > 0, got 0"),
    ({"seed": -1}, "seed: must be an integer >= 0, got -1"),
    ({"space": 3}, "space: must be a path to a space file, got 3"),
    ({"data": {"name": "digits", "clases": [1]}}, "data.clases: unknown key (valid: "),
    ({"model": {"name": "cnn", "weight": "x"}}, "model.weight: unknown key (valid: "),
    ({"model": 3}, "model: must be a mapping or a name, got 3"),
    ({"baseline": [1, 2]}, "baseline: must be a mapping of training configuration fields"),
    ({"probes": "yes"}, "probes: must be true or false, got 'yes'"),
    ({"data": {"name": "digits", "test_fraction": 1}},
     "data.test_fraction: must be a number in [0, 1), got 1"),
    ({"data": {"name": "digits", "image_size": 0}},
     "data.image_size: must be an integer >= 1, got 0"),
])
def test_invalid_recipe_names_file_and_key(tmp_path: Path, changes: dict[str, Any],
                                           message: str) -> None:
    path = write(tmp_path, {**base_recipe(), **changes})
    with pytest.raises(UserError) as info:
        recipes.load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


def test_a_bad_baseline_value_names_file_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, {**base_recipe(), "baseline": {"optimizer": "adam", "lr": -1}})
    with pytest.raises(UserError, match=re.escape(f"{path}: baseline: lr: must be > 0, got -1")):
        recipes.load(path)


def test_missing_space_file_names_the_resolved_path(tmp_path: Path) -> None:
    path = write(tmp_path, {**base_recipe(), "space": "nope.yaml"})
    with pytest.raises(UserError, match=re.escape(
            f"{path}: space: file not found: {(tmp_path / 'nope.yaml').resolve()}")):
        recipes.load(path)


def test_a_space_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "spaces").mkdir()
    path = write(tmp_path, {**base_recipe(), "space": "spaces"})
    with pytest.raises(UserError, match=re.escape(f"{path}: space: is a directory: ")):
        recipes.load(path)


def test_a_missing_recipe_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'none.yaml'}: file not found")):
        recipes.load(tmp_path / "none.yaml")


# --- the content hash -----------------------------------------------------------------------

def test_hash_is_stable_for_the_same_content(tmp_path: Path) -> None:
    assert load_with(tmp_path).hash() == load_with(tmp_path).hash()


@pytest.mark.parametrize("changes", [
    {"trials": 50},
    {"trials": None},
    {"timeout": 999},
    {"timeout": None},
    {"storage": "sqlite:///elsewhere.db"},
    {"description": "the same search, described"},
])
def test_hash_ignores_budget_and_storage(tmp_path: Path, changes: dict[str, Any]) -> None:
    before = load_with(tmp_path).hash()
    assert load_with(tmp_path, **changes).hash() == before


@pytest.mark.parametrize("changes", [
    {"epochs": 3},
    {"seed": 1},
    {"sampler": "tpe"},
    {"pruner": {"name": "pareto-sha", "eta": 3, "min_resource": 1}},
    {"pruner": "none"},
    {"baseline": {"optimizer": "adam", "lr": 0.001, "batch_size": 64}},
    {"data": {"name": "digits", "classes": [5, 6, 7]}},
    {"model": {"name": "cnn"}},
    {"name": "other"},
    {"objective": "time-to-accuracy", "target": 0.9, "pruner": "none"},
])
def test_hash_changes_with_the_content(tmp_path: Path, changes: dict[str, Any]) -> None:
    before = load_with(tmp_path).hash()
    assert load_with(tmp_path, **changes).hash() != before


def test_hash_changes_when_the_space_file_changes(tmp_path: Path) -> None:
    before = load_with(tmp_path).hash()
    (tmp_path / "space.yaml").write_text("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n",
                                         encoding="utf-8")
    assert load_with(tmp_path).hash() != before


def test_content_holds_the_space_text_not_its_path(tmp_path: Path) -> None:
    content = load_with(tmp_path).content()
    assert content["space"] == SPACE
    assert "trials" not in content and "timeout" not in content and "storage" not in content
