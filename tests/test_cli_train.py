"""`search train RECIPE`: one JSON object, --set overrides, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from search.cli import cli
from tests import faultmodels as fm

RECIPE = """\
name: tiny
data:
  name: digits
  classes: [5, 6, 7, 8, 9]
model:
  name: cnn
  weights: pretrained:digits-0-4
epochs: 2
baseline:
  optimizer: adam
  lr: 0.001
  batch_size: 64
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


def _train(*args: str, device: str = "cpu") -> Result:
    return CliRunner().invoke(cli, ["train", *args, "--device", device])


def test_json_prints_one_object(recipe: Path) -> None:
    result = _train(str(recipe), "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["outcome"] == "completed" and summary["reason"] == ""
    assert summary["epochs_run"] == 2 and 1 <= summary["best_epoch"] <= 2
    assert 0.5 < summary["accuracy"] <= 1.0
    assert 0 < summary["seconds"] <= summary["train_seconds"]
    assert summary["flops_per_sample"] > 0
    assert summary["device"].startswith("cpu:")
    assert summary["config"]["optimizer"] == "adam" and summary["config"]["epochs"] == 2
    assert result.stderr == ""  # no per-epoch lines with --json


def test_set_overrides_apply(recipe: Path) -> None:
    result = _train(str(recipe), "--json", "--set", "epochs=1", "--set", "optimizer=momentum",
                    "--set", "lr=0.02", "--set", "momentum=0.8", "--set", "frozen_layers=1",
                    "--set", "lr_schedule=cosine")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs_run"] == 1
    config = summary["config"]
    assert (config["optimizer"], config["lr"], config["momentum"]) == ("momentum", 0.02, 0.8)
    assert (config["frozen_layers"], config["lr_schedule"]) == (1, "cosine")
    assert config["batch_size"] == 64  # from the recipe's baseline


def test_set_accepts_scientific_notation(recipe: Path) -> None:
    # PyYAML reads "1e-3" as a string (YAML 1.1 floats need a dot and a signed exponent).
    result = _train(str(recipe), "--json", "--set", "epochs=1", "--set", "lr=1e-3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["lr"] == 0.001


def test_set_overrides_do_not_depend_on_their_order(recipe: Path) -> None:
    # The baseline is adam; the overrides together name a valid momentum config.
    result = _train(str(recipe), "--json", "--set", "epochs=1", "--set", "momentum=0.8",
                    "--set", "optimizer=momentum", "--set", "lr=0.02")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["momentum"] == 0.8


def test_plain_output_reports_accuracy_and_epochs(recipe: Path) -> None:
    result = _train(str(recipe), "--set", "epochs=1")
    assert result.exit_code == 0, result.output
    assert "outcome completed" in result.stdout and "accuracy " in result.stdout
    assert "epoch   1/1" in result.stderr  # the per-epoch progress line


def test_diverged_run_exits_1(recipe: Path) -> None:
    result = _train(str(recipe), "--json", "--set", "optimizer=sgd", "--set", "lr=1000000")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["outcome"] == "diverged"


@pytest.mark.parametrize(("item", "parts"), [
    ("lr=-1", ["--set lr=-1", "lr: must be > 0", "got -1"]),
    ("lr=fast", ["--set lr=fast", "lr: must be a number", "got 'fast'"]),
    ("batch_size=2.5", ["--set batch_size=2.5", "must be an integer", "got 2.5"]),
    ("precision=fp8", ["--set precision=fp8", "precision: must be one of", "got 'fp8'"]),
    ("optimizer=lion", ["--set optimizer=lion", "unknown optimizer", "got 'lion'"]),
    ("momentum=0.9", ["--set momentum=0.9", "optimizer 'adam' takes no momentum", "got 0.9"]),
    ("frozen_layers=9", ["frozen_layers", "3 blocks", "got 9"]),
    ("nosuch=1", ["--set nosuch=1", "unknown key 'nosuch'"]),
    ("lr", ["--set lr", "expected key=value"]),
    ("lr=[0.1", ["--set lr=[0.1", "cannot parse"]),
])
def test_bad_set_is_one_line_and_exit_2(recipe: Path, item: str, parts: list[str]) -> None:
    fm.one_error_line(_train(str(recipe), "--set", "epochs=1", "--set", item), *parts)


def test_bad_baseline_in_the_recipe_names_file_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(RECIPE.replace("lr: 0.001", "lr: -2"), encoding="utf-8")
    fm.one_error_line(_train(str(path)), str(path), "baseline", "lr: must be > 0", "got -2")


def test_unknown_device_is_one_line(recipe: Path) -> None:
    fm.one_error_line(_train(str(recipe), device="tpu:9"), "--device", "'tpu:9'")


@pytest.mark.parametrize(("content", "problem"), [
    (None, "file not found"),
    (b"", "empty file"),
    (b"   \n# only a comment\n", "empty file"),
    (b"name: [unclosed\n", "YAML syntax error"),
    (b"- name: a\n- name: b\n", "expected a mapping at the top level, got a list"),
    (b"name: caf\xe9\n", "not UTF-8"),
    (b"'just a string'\n", "expected a mapping at the top level, got a str"),
])
def test_bad_recipe_file_is_one_line_naming_it(tmp_path: Path, content: bytes | None,
                                               problem: str) -> None:
    path = tmp_path / "recipe.yaml"
    if content is not None:
        path.write_bytes(content)
    fm.one_error_line(_train(str(path)), str(path), problem)


def test_recipe_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    fm.one_error_line(_train(str(tmp_path)), str(tmp_path), "is a directory")
