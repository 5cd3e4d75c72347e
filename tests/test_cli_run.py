"""`search run` and `search status` end to end, through click's CliRunner, on a tiny study:
the built-in CNN pretrained on digits 0-4, fine-tuned on digits 5-9 for 2 epochs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner, Result
from optuna.trial import TrialState

from search.cli import cli
from search.training.config import TrainConfig
from search.tuning import space as spaces
from tests import faultmodels as fm

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = ("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
         "batch_size: {choices: [64, 128]}\n"
         "frozen_layers: {low: 0, high: max}\n")
BASELINE = {"optimizer": "adam", "lr": 0.003, "batch_size": 64}
OUTCOMES = {"completed", "early-stopped", "pruned", "diverged", "oom", "failed", "unreached"}


pytestmark = pytest.mark.usefixtures("one_thread")


def write_recipe(folder: Path, **fields: Any) -> Path:
    """The shared tiny recipe with 3 trials under our pruner."""
    return fm.write_recipe(folder, SPACE, **{"trials": 3, "baseline": BASELINE,
                                             "pruner": {"name": "pareto-sha", "eta": 3,
                                                        "min_resource": 1}, **fields})


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def url(db: Path) -> str:
    return f"sqlite:///{db}"


def load(db: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=url(db))


def snapshot(trial: optuna.trial.FrozenTrial) -> tuple[Any, ...]:
    return (trial.number, trial.state, trial.values, trial.params,
            json.dumps(trial.user_attrs, sort_keys=True))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Result]:
    """`search run tiny.yaml --quiet` to the recipe's budget of 3 trials: (recipe, db, result)."""
    fm.one_thread()
    folder = tmp_path_factory.mktemp("cli-run")
    recipe = write_recipe(folder)
    db = folder / "study.db"
    result = invoke("run", str(recipe), "--quiet", "--device", "cpu", "--storage", url(db))
    return recipe, db, result


def copy_of(first_run: tuple[Path, Path, Result], tmp_path: Path) -> Path:
    """A copy of the first run's storage, for a test that writes to it."""
    db = tmp_path / "study.db"
    shutil.copy(first_run[1], db)
    return db


# --- search run -----------------------------------------------------------------------------

def test_run_fills_the_budget_and_prints_the_front(first_run: tuple[Path, Path, Result]) -> None:
    recipe, db, result = first_run
    assert result.exit_code == 0, result.output
    assert "Pareto front of 'tiny'" in result.stdout
    assert "ran 3 trials" in result.stdout and "sqlite:///" in result.stdout
    trials = load(db).trials
    assert len(trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # Trials 0 and 1 meet fewer than 3 trials at the first rung: never pruned.
    assert trials[0].state == trials[1].state == TrialState.COMPLETE


def test_values_are_accuracy_and_seconds(first_run: tuple[Path, Path, Result]) -> None:
    study = load(first_run[1])
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        accuracy, seconds = t.values
        assert 0.0 <= accuracy <= 1.0 and seconds > 0


def test_every_trial_records_curve_outcome_config_and_device(
        first_run: tuple[Path, Path, Result]) -> None:
    for t in load(first_run[1]).trials:
        attrs = t.user_attrs
        assert attrs["outcome"] in OUTCOMES
        assert isinstance(attrs["device"], str) and attrs["device"].startswith("cpu:")
        config = TrainConfig.from_mapping(attrs["config"], source="stored config")
        assert config.epochs == 2 and config.lr == t.params["lr"]
        curve = attrs["curve"]
        assert 1 <= len(curve) <= 2
        assert [e["epoch"] for e in curve] == list(range(1, len(curve) + 1))
        assert all(0 <= e["accuracy"] <= 1 and e["seconds"] > 0 for e in curve)
        # Every trial completes with its point, a stopped one with the point it reached.
        assert t.state == TrialState.COMPLETE
        result = attrs["result"]
        assert t.values == [result["accuracy"], result["seconds"]]
        assert result["accuracy"] == max(e["accuracy"] for e in curve)
        # Selected on validation; the test split's accuracy at that epoch rides along.
        assert 0 <= result["test_accuracy"] <= 1
        if attrs["outcome"] == "completed":
            assert result["epochs_run"] == len(curve) == 2
        else:
            assert attrs["outcome"] == "pruned" and "rung" in attrs["reason"]


def test_the_front_shows_test_accuracy_beside_validation_accuracy(
        first_run: tuple[Path, Path, Result]) -> None:
    recipe, db, result = first_run
    header = next(line for line in result.stdout.splitlines() if line.lstrip().startswith("trial"))
    assert header.split()[:5] == ["trial", "val", "acc", "test", "acc"]
    best = invoke("best", "tiny", "--storage", url(db), "--json")
    assert best.exit_code == 0, best.output
    picked = json.loads(best.stdout)
    trial = load(db).trials[picked["trial"]]
    assert picked["test_accuracy"] == trial.user_attrs["result"]["test_accuracy"] is not None
    assert f"(test {picked['test_accuracy']:.4f})" in invoke("best", "tiny", "--storage",
                                                             url(db)).stdout


def test_trial_zero_is_the_baseline(first_run: tuple[Path, Path, Result]) -> None:
    recipe, db, _ = first_run
    space = spaces.load(recipe.parent / "tiny-space.yaml", max_blocks=3)
    baseline = TrainConfig(epochs=2, **BASELINE)
    trial = load(db).trials[0]
    assert trial.params == space.params_of(baseline) == {"lr": 0.003, "batch_size": 64,
                                                         "frozen_layers": 0}
    assert trial.user_attrs["config"] == baseline.to_dict()
    assert trial.params != load(db).trials[1].params  # later trials are sampled


def test_resume_adds_exactly_the_missing_trials_and_prints_json(
        first_run: tuple[Path, Path, Result], tmp_path: Path) -> None:
    recipe = first_run[0]
    db = copy_of(first_run, tmp_path)
    before = [snapshot(t) for t in load(db).trials]
    result = invoke("run", str(recipe), "--quiet", "--json", "--device", "cpu",
                    "--storage", url(db), "--trials", "5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["study"] == "tiny" and out["ran"] == 2 and out["storage"] == url(db)
    assert out["front"]
    for row in out["front"]:
        assert 0 <= row["accuracy"] <= 1 and row["seconds"] > 0
        assert set(row["params"]) <= {"lr", "batch_size", "frozen_layers"}
    numbers = [row["trial"] for row in out["front"]]
    assert numbers == sorted(numbers, key=lambda n: load(db).trials[n].values[1])

    trials = load(db).trials
    assert len(trials) == 5
    assert [snapshot(t) for t in trials[:3]] == before  # earlier trials untouched


def test_run_with_the_budget_already_met_runs_nothing(first_run: tuple[Path, Path, Result],
                                                      tmp_path: Path) -> None:
    # Fixed bug (loop.py, work): BudgetGate is called once before study.optimize, and on a
    # study that already holds its budget it calls study.stop() outside optimize, which
    # raises RuntimeError ("`Study.stop` is supposed to be invoked inside an objective
    # function or a callback"): re-running a finished study crashes instead of running 0.
    db = copy_of(first_run, tmp_path)
    result = invoke("run", str(first_run[0]), "--quiet", "--json", "--device", "cpu",
                    "--storage", url(db))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ran"] == 0
    assert len(load(db).trials) == 3


def test_a_different_recipe_under_the_same_name_is_refused(
        first_run: tuple[Path, Path, Result], tmp_path: Path) -> None:
    db = copy_of(first_run, tmp_path)
    changed = write_recipe(tmp_path, epochs=3)
    result = invoke("run", str(changed), "--quiet", "--device", "cpu", "--storage", url(db))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "different recipe" in lines[0] and str(changed) in lines[0]
    assert len(load(db).trials) == 3  # nothing was added


def test_the_same_recipe_content_elsewhere_resumes(first_run: tuple[Path, Path, Result],
                                                   tmp_path: Path) -> None:
    db = copy_of(first_run, tmp_path)
    moved = write_recipe(tmp_path, trials=99, timeout=60)  # budget is not content
    result = invoke("run", str(moved), "--quiet", "--json", "--device", "cpu",
                    "--storage", url(db), "--trials", "4")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ran"] == 1
    assert len(load(db).trials) == 4


def test_run_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    for args, needle in [
        (["run", str(tmp_path / "none.yaml")], "none.yaml: file not found"),
        (["run", str(write_recipe(good)), "--sampler", "bayes"], "--sampler: unknown sampler"),
        (["run", str(write_recipe(bad, epochs=0))], "epochs: must be an integer >= 1, got 0"),
    ]:
        result = invoke(*args, "--quiet", "--storage", url(tmp_path / "x.db"))
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], result.stderr


# --- search status --------------------------------------------------------------------------

def test_status_json_counts_outcomes(first_run: tuple[Path, Path, Result]) -> None:
    db = first_run[1]
    result = invoke("status", "tiny", "--storage", url(db), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1
    row = rows[0]
    trials = load(db).trials
    assert row["study"] == "tiny" and row["objective"] == "pareto"
    assert row["trials"] == 3 and sum(row["outcomes"].values()) == 3
    expected: dict[str, int] = {}
    for t in trials:
        expected[t.user_attrs["outcome"]] = expected.get(t.user_attrs["outcome"], 0) + 1
    assert row["outcomes"] == expected
    assert row["front_size"] >= 1 and row["running"] == []
    assert row["best_accuracy"] == max(t.values[0] for t in trials if t.values)


def test_status_text_lists_the_study(first_run: tuple[Path, Path, Result]) -> None:
    result = invoke("status", "--storage", url(first_run[1]))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("tiny (pareto): 3 trials: ")


def test_status_of_an_unknown_study_exits_2_with_one_line(
        first_run: tuple[Path, Path, Result]) -> None:
    result = invoke("status", "nope", "--storage", url(first_run[1]))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no study named 'nope'" in lines[0] and "tiny" in lines[0]
