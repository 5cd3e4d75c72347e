"""`search export` and `search.load_config`: the self-describing YAML file, its round trip
back to an equal TrainConfig, plain mapping files, foreign files, and re-training an
exported config with `search train RECIPE --config FILE`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from click.testing import CliRunner, Result
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

import search
from search.cli import cli
from search.errors import UserError
from search.reviewing import export as exporter
from search.training.config import TrainConfig
from tests import faultmodels as fm
from tests.test_choose import CPU, HAND, RECIPE, completed, config_of, make_study, pruned

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Every field away from its default, floats that need all their digits to survive YAML.
EVERY_FIELD = TrainConfig(
    optimizer="adamw", lr=1 / 3, weight_decay=3.2e-06, betas=(0.85, 0.995),
    lr_schedule="onecycle", warmup=0.15, lr_scaling="linear", batch_size=128, epochs=7,
    patience=2, frozen_layers=1, mixup_alpha=0.3, cutmix_alpha=0.4, label_smoothing=0.05,
    precision="bf16", channels_last=True, compile=True, dropout=0.1, seed=3, stop_after=5)

TINY_RECIPE = """\
name: tiny
data: {name: digits, classes: [5, 6, 7, 8, 9]}
model: {name: cnn, weights: pretrained:digits-0-4}
epochs: 3
baseline: {optimizer: sgd, lr: 0.5, batch_size: 32}
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = tmp_path_factory.mktemp("export") / "hand.db"
    storage = f"sqlite:///{db}"
    trials = [completed(i, a, s) for i, (a, s) in enumerate(HAND)]
    make_study(storage, "hand", [*trials, pruned(5)])
    return storage


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def exported(url: str, folder: Path, *options: str) -> tuple[Path, dict[str, Any]]:
    path = folder / "best.yaml"
    result = invoke("export", "hand", "--storage", url, *options, "-o", str(path))
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout
    return path, yaml.safe_load(path.read_text(encoding="utf-8"))


# -- the round trip --------------------------------------------------------------------


def test_round_trip_is_equal_field_by_field(tmp_path: Path) -> None:
    trial = create_trial(
        params={"lr": EVERY_FIELD.lr}, distributions={"lr": FloatDistribution(0.01, 1.0)},
        values=[0.9, 1.5],
        user_attrs={"config": EVERY_FIELD.to_dict(), "outcome": "completed",
                    "result": {"accuracy": 0.9, "seconds": 1.5, "best_epoch": 5}})
    path = exporter.write(exporter.export_record("s", trial, RECIPE), tmp_path / "a" / "c.yaml")
    loaded = search.load_config(path)
    assert isinstance(loaded, TrainConfig)
    for name in TrainConfig.fields():
        assert getattr(loaded, name) == getattr(EVERY_FIELD, name), name
        assert type(getattr(loaded, name)) is type(getattr(EVERY_FIELD, name)), name
    assert loaded == EVERY_FIELD
    assert loaded.to_dict() == EVERY_FIELD.to_dict()


def test_exported_file_describes_itself(url: str, tmp_path: Path) -> None:
    path, record = exported(url, tmp_path, "--min-accuracy", "0.96")
    assert path.read_text(encoding="utf-8").startswith("#")  # says how to load it
    assert record["format"] == exporter.FORMAT
    # The schedule's length and where the point was measured.
    assert record["params"] == {**config_of(2), "stop_after": 2}
    assert record["params"]["epochs"] == 2
    assert record["measured"]["val_accuracy"] == pytest.approx(HAND[2][0])
    assert "test_accuracy" in record["measured"]
    assert record["measured"]["seconds"] == pytest.approx(HAND[2][1])
    assert record["measured"]["outcome"] == "completed"
    assert record["device"]["key"] == CPU
    assert record["data"] == RECIPE["data"]
    assert record["model"] == RECIPE["model"]
    assert record["study"] == "hand"
    assert record["trial"] == 2
    assert record["tool"] == {"name": "search", "version": search.__version__}
    assert search.load_config(path) == TrainConfig.from_mapping(config_of(2)).replace(
        stop_after=2)


def test_export_defaults_to_the_knee(url: str, tmp_path: Path) -> None:
    assert exported(url, tmp_path)[1]["trial"] == 1


def test_export_by_trial_number(url: str, tmp_path: Path) -> None:
    path, record = exported(url, tmp_path, "--trial", "4")  # dominated, but asked for
    assert record["trial"] == 4
    assert record["measured"]["val_accuracy"] == pytest.approx(HAND[4][0])
    assert search.load_config(path) == TrainConfig.from_mapping(config_of(4)).replace(
        stop_after=record["params"]["stop_after"])


def test_export_of_a_pruned_trial_is_refused_and_writes_nothing(url: str,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "x.yaml"
    fm.one_error_line(invoke("export", "hand", "--storage", url, "--trial", "5", "-o", str(out)),
                   "--trial", "5")
    assert not out.exists()


# -- load_config on other files ---------------------------------------------------------


def test_load_config_on_a_plain_mapping(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("optimizer: nesterov\nlr: 1e-2\nmomentum: 0.8\nbatch_size: 32\n"
                    "lr_schedule: cosine\n", encoding="utf-8")
    cfg = search.load_config(path)
    assert cfg == TrainConfig(optimizer="nesterov", lr=0.01, momentum=0.8, batch_size=32,
                              lr_schedule="cosine")


def test_load_config_refuses_another_format_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("format: other\nparams: {lr: 0.1}\n", encoding="utf-8")
    with pytest.raises(UserError) as info:
        search.load_config(path)
    message = str(info.value)
    assert str(path) in message and "format" in message and "'other'" in message
    assert "\n" not in message


def test_load_config_names_file_and_key_of_a_bad_param(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"format: {exporter.FORMAT}\nparams: {{lr: 0.1, lrr: 0.2}}\n",
                    encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.yaml.*'lrr'"):
        search.load_config(path)
    path.write_text(f"format: {exporter.FORMAT}\nparams: {{lr: -1}}\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.yaml.*lr.*-1"):
        search.load_config(path)


def test_load_config_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nowhere.yaml: file not found"):
        search.load_config(tmp_path / "nowhere.yaml")


# -- re-training an exported config -------------------------------------------------------


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE, encoding="utf-8")
    return path


def test_train_with_an_exported_config(url: str, tmp_path: Path, recipe: Path) -> None:
    path, record = exported(url, tmp_path, "--trial", "1")
    result = invoke("train", str(recipe), "--config", str(path), "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert summary["outcome"] == "completed"
    # The exported config replaces the recipe's baseline (sgd, epochs 3, batch 32).
    assert summary["config"] == record["params"]
    assert summary["epochs_run"] == record["params"]["stop_after"] == 2
    assert summary["test_accuracy"] is not None  # the recipe's data has a test split


def test_train_with_a_foreign_config_is_one_line(tmp_path: Path, recipe: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("format: other\n", encoding="utf-8")
    result = invoke("train", str(recipe), "--config", str(path), "--device", "cpu")
    fm.one_error_line(result, str(path), "format")


def test_a_stopped_trials_point_is_exported_and_reproduced_by_retraining(tmp_path: Path
                                                                         ) -> None:
    """Every measured point counts: a trial the pruner stopped after epoch 1 of 2 is a
    complete trial with its point; its export says where to stop (``stop_after``), and
    training the loaded config as it is (the schedule laid out over 2 epochs, same seed)
    stops there and lands on the same point: the same accuracy, validation and test, the
    same epochs and examples trained, so the seconds are of the same work."""
    from search.training.data import DataSpec
    from search.training.data import load as load_data
    from search.training.engine import train
    from search.training.models import ModelSpec
    from tests.test_study import PRUNE_SEED, PRUNE_SPACE, run_recipe

    path = fm.write_recipe(tmp_path, PRUNE_SPACE, trials=4, seed=PRUNE_SEED,
                           pruner={"name": "pareto-sha", "eta": 2, "min_resource": 1})
    study = run_recipe(path)
    stopped = study.trials[2]
    assert stopped.user_attrs["outcome"] == "pruned"
    assert stopped.state == optuna.trial.TrialState.COMPLETE
    storage = f"sqlite:///{tmp_path / 'tiny.db'}"
    out = tmp_path / "stopped.yaml"
    result = invoke("export", "tiny", "--storage", storage, "--trial", "2", "-o", str(out))
    assert result.exit_code == 0, result.output
    record = yaml.safe_load(out.read_text())
    assert record["measured"]["outcome"] == "pruned"
    assert (record["params"]["epochs"], record["params"]["stop_after"]) == (2, 1)
    assert record["measured"]["val_accuracy"] == stopped.values[0]

    config = search.load_config(out)
    assert config.train_epochs == 1
    data = load_data(DataSpec("digits", classes=(5, 6, 7, 8, 9)))
    again = train(config, data, ModelSpec("cnn", weights="pretrained:digits-0-4"),
                  device="cpu")
    assert (again.outcome, again.epochs_run) == ("completed", 1)
    assert again.accuracy == record["measured"]["val_accuracy"]
    assert again.test_accuracy == record["measured"]["test_accuracy"] is not None
    measured = stopped.user_attrs["result"]
    assert again.samples_per_second * again.train_seconds == pytest.approx(
        measured["samples_per_second"] * measured["train_seconds"])  # the same examples


def test_a_v1_export_loads_with_its_stop_after_epochs(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(f"format: {exporter.V1}\nparams: {{lr: 0.1, epochs: 6}}\n"
                    "reproduce: {epochs: 6, stop_after_epochs: 2}\n", encoding="utf-8")
    config = search.load_config(path)
    assert (config.lr, config.epochs, config.stop_after, config.train_epochs) == (0.1, 6, 2, 2)


def test_stop_after_beyond_the_schedule_is_a_user_error() -> None:
    from search.errors import UserError

    with pytest.raises(UserError, match=r"^stop_after: must be at most epochs \(3\), got 4$"):
        TrainConfig(epochs=3, stop_after=4)
