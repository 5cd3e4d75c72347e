"""`search best` (and the choice options `search export` shares) on studies built by hand
through Optuna's own API, with known values: which trial each option picks, what --json
prints, devices, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner, Result
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from search.cli import cli
from search.errors import UserError
from search.reviewing import choose as chooser
from search.training.config import TrainConfig
from tests import faultmodels as fm

optuna.logging.set_verbosity(optuna.logging.WARNING)

CPU = "cpu:x"
GPU = "cuda:y"
DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1e-1, log=True),
                 "batch_size": CategoricalDistribution([32, 64, 128])}
RECIPE = {"name": "hand", "data": {"name": "digits", "classes": [5, 6, 7, 8, 9]},
          "model": {"name": "cnn", "weights": "pretrained:digits-0-4"}, "epochs": 2}

# (accuracy, seconds) by trial number. Front: 0, 1, 2, 3; 4 is dominated by 1.
# Knee by hand (accuracy and seconds min-max scaled over the front, maximize a' - s'):
#   0: 0 - 0 = 0;  1: .05/.08 - 1/7 = .48;  2: .07/.08 - 3/7 = .45;  3: 1 - 1 = 0  -> 1.
# 5 is pruned; 6 diverged (infeasible) with values that would beat every other trial.
HAND = [(0.90, 1.0), (0.95, 2.0), (0.97, 4.0), (0.98, 8.0), (0.93, 3.0)]
DIVERGED = (0.995, 0.5)


def config_of(number: int) -> dict[str, Any]:
    """A distinct, valid full config per trial (lr tells them apart)."""
    return TrainConfig(lr=0.001 * (number + 1), batch_size=64, epochs=2, frozen_layers=1,
                       seed=number).to_dict()


def completed(number: int, acc: float, sec: float, *, device: str = CPU,
              outcome: str = "completed") -> FrozenTrial:
    """A finished trial as `search run` stores it (values, config, result, outcome, device)."""
    config = config_of(number)
    result = {"outcome": outcome, "reason": "", "accuracy": acc, "seconds": sec,
              "best_epoch": 2, "epochs_run": 2, "final_accuracy": acc,
              "train_seconds": sec + 0.25, "eval_seconds": 0.01,
              "samples_per_second": 1000.0, "flops_per_sample": 1.0e6,
              "device": {"key": device}, "curve": [], "config": config}
    infeasible = outcome in ("diverged", "oom")
    return create_trial(
        params={"lr": config["lr"], "batch_size": 64}, distributions=DISTRIBUTIONS,
        values=[acc, sec],
        user_attrs={"config": config, "result": result, "outcome": outcome, "device": device},
        system_attrs={"constraints": [1.0 if infeasible else 0.0]})


def pruned(number: int) -> FrozenTrial:
    config = config_of(number)
    return create_trial(
        state=TrialState.PRUNED, params={"lr": config["lr"], "batch_size": 64},
        distributions=DISTRIBUTIONS, intermediate_values={1: 0.5},
        user_attrs={"config": config, "outcome": "pruned", "device": CPU,
                    "reason": "pruned at rung 0 (rank 3 of 3)",
                    "curve": [{"epoch": 1, "seconds": 0.1, "accuracy": 0.5, "loss": 1.0}]})


def make_study(url: str, name: str, trials: list[FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"], storage=url,
                                study_name=name)
    study.set_user_attr("recipe", {**RECIPE, "name": name})
    for t in trials:
        study.add_trial(t)
    return study


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file holding study `hand` (one device) and study `mixed` (two devices)."""
    db = tmp_path_factory.mktemp("choose") / "hand.db"
    storage = f"sqlite:///{db}"
    hand = [completed(i, a, s) for i, (a, s) in enumerate(HAND)]
    hand += [pruned(5), completed(6, *DIVERGED, outcome="diverged")]
    make_study(storage, "hand", hand)
    # cpu:x holds 3 trials (the most used device), cuda:y 2 that would beat them all.
    mixed = [completed(0, 0.90, 1.0), completed(1, 0.95, 2.0), completed(2, 0.97, 4.0),
             completed(3, 0.99, 0.2, device=GPU), completed(4, 0.96, 0.1, device=GPU)]
    make_study(storage, "mixed", mixed)
    return storage


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def best_json(url: str, *args: str, name: str = "hand") -> dict[str, Any]:
    result = invoke("best", name, "--storage", url, "--json", *args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


# -- which trial each option picks -------------------------------------------------------


def test_min_accuracy_picks_the_fastest_trial_reaching_it(url: str) -> None:
    assert best_json(url, "--min-accuracy", "0.96")["trial"] == 2
    assert best_json(url, "--min-accuracy", "0.95")["trial"] == 1
    assert best_json(url, "--min-accuracy", "0.98")["trial"] == 3


def test_min_accuracy_skips_the_diverged_trial_that_would_reach_it_fastest(url: str) -> None:
    # Only trial 6 (diverged, 0.995 in 0.5 s) reaches 0.99, and it is infeasible.
    result = invoke("best", "hand", "--storage", url, "--min-accuracy", "0.99")
    fm.one_error_line(result, "--min-accuracy", "0.99", "best is 0.9800")


def test_max_seconds_picks_the_most_accurate_trial_within_it(url: str) -> None:
    assert best_json(url, "--max-seconds", "3.5")["trial"] == 1  # not 4 (0.93 in 3 s)
    assert best_json(url, "--max-seconds", "1")["trial"] == 0
    assert best_json(url, "--max-seconds", "100")["trial"] == 3


def test_knee_is_the_default_and_the_hand_computed_one(url: str) -> None:
    assert best_json(url, "--knee")["trial"] == 1
    assert best_json(url)["trial"] == 1


def test_pruned_and_diverged_trials_are_never_chosen(url: str) -> None:
    picks = {best_json(url, "--max-seconds", "50")["trial"],
             best_json(url, "--min-accuracy", "0.0")["trial"],
             best_json(url)["trial"]}
    assert picks == {3, 0, 1}
    # Within 0.6 s only the diverged trial would fit: nothing qualifies.
    fm.one_error_line(invoke("best", "hand", "--storage", url, "--max-seconds", "0.6"),
                   "--max-seconds", "0.6", "1.000")


def test_json_output_fields(url: str) -> None:
    out = best_json(url, "--min-accuracy", "0.96")
    assert set(out) == {"study", "trial", "metric", "accuracy", "test_accuracy", "seconds",
                        "best_epoch", "device", "params"}
    assert out["metric"] == "accuracy"
    assert out["study"] == "hand"
    assert out["trial"] == 2
    assert out["accuracy"] == pytest.approx(0.97)
    assert out["seconds"] == pytest.approx(4.0)
    assert out["best_epoch"] == 2
    assert out["device"] == CPU
    # The config as it was measured: stop after its best epoch.
    assert out["params"] == {**config_of(2), "stop_after": 2}
    assert TrainConfig.from_mapping(out["params"]).train_epochs == 2


def test_text_output_names_trial_point_and_every_field(url: str) -> None:
    result = invoke("best", "hand", "--storage", url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("trial 1: accuracy 0.9500 (test -) in 2.000s")
    assert "stop after epoch 2 of 2" in lines[0] and CPU in lines[0]
    assert [line.split(":")[0].strip() for line in lines[1:]] == list(TrainConfig.fields())


# -- nothing qualifies, conflicting options -----------------------------------------------


def test_nothing_reaching_the_accuracy_is_one_line_and_exit_2(url: str) -> None:
    line = fm.one_error_line(invoke("best", "hand", "--storage", url, "--min-accuracy", "0.999"),
                          "--min-accuracy", "0.999")
    assert "best is 0.9800" in line  # the diverged 0.995 is not "best"


def test_nothing_within_the_time_is_one_line_and_exit_2(url: str) -> None:
    line = fm.one_error_line(invoke("best", "hand", "--storage", url, "--max-seconds", "0.1"),
                          "--max-seconds")
    assert "fastest is 1.000s" in line  # the diverged 0.5 s is not "fastest"


@pytest.mark.parametrize("options", [
    ("--min-accuracy", "0.9", "--max-seconds", "3"),
    ("--min-accuracy", "0.9", "--knee"),
    ("--max-seconds", "3", "--knee"),
])
def test_two_choice_options_together_are_refused(url: str, options: tuple[str, ...]) -> None:
    line = fm.one_error_line(invoke("best", "hand", "--storage", url, *options), "choose one")
    named = [o for o in options if o.startswith("--")]
    assert all(o in line for o in named)


def test_export_refuses_trial_together_with_another_choice(url: str, tmp_path: Path) -> None:
    out = tmp_path / "x.yaml"
    fm.one_error_line(invoke("export", "hand", "--storage", url, "--trial", "1", "--knee",
                          "-o", str(out)), "--knee", "--trial", "choose one")
    assert not out.exists()


def test_a_study_without_completed_trials_is_one_line(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    make_study(storage, "bad", [pruned(0), completed(1, *DIVERGED, outcome="diverged")])
    fm.one_error_line(invoke("best", "bad", "--storage", storage), "no completed trials")


# -- devices --------------------------------------------------------------------------------


def test_two_devices_note_on_stderr_and_only_the_most_used_is_considered(url: str) -> None:
    result = invoke("best", "mixed", "--storage", url, "--json")
    assert result.exit_code == 0, result.output
    assert "note:" in result.stderr and "2 devices" in result.stderr
    assert GPU in result.stderr and "--device-key" in result.stderr
    out = json.loads(result.stdout)
    # Knee of cpu:x's (0.90, 1), (0.95, 2), (0.97, 4) is 1; cuda:y's trials would win.
    assert out["trial"] == 1 and out["device"] == CPU
    assert best_json(url, "--min-accuracy", "0.96", name="mixed")["trial"] == 2
    assert best_json(url, "--max-seconds", "1.5", name="mixed")["trial"] == 0


def test_device_key_selects_the_other_device(url: str) -> None:
    result = invoke("best", "mixed", "--storage", url, "--device-key", GPU, "--json")
    assert result.exit_code == 0, result.output
    assert CPU in result.stderr  # the note names the device left out
    out = json.loads(result.stdout)
    assert out["device"] == GPU and out["trial"] == 3  # two points: the most accurate
    assert best_json(url, "--device-key", GPU, "--max-seconds", "0.15",
                     name="mixed")["trial"] == 4


def test_one_device_gives_no_note(url: str) -> None:
    result = invoke("best", "hand", "--storage", url)
    assert result.exit_code == 0 and result.stderr == ""


def test_unknown_device_key_is_one_line(url: str) -> None:
    fm.one_error_line(invoke("best", "mixed", "--storage", url, "--device-key", "tpu:z"),
                   "--device-key", "tpu:z", CPU, GPU)


def test_device_of_returns_the_most_used_key_and_a_note(url: str) -> None:
    trials = chooser.load_study("mixed", url).get_trials()
    assert chooser.device_of(trials, None)[0] == CPU
    key, note = chooser.device_of(trials, GPU)
    assert key == GPU and CPU in note
    assert chooser.device_of(chooser.load_study("hand", url).get_trials(), None) == (CPU, "")


# -- unknown studies and storages ---------------------------------------------------------


def test_unknown_study_is_one_line_listing_the_studies(url: str) -> None:
    fm.one_error_line(invoke("best", "nope", "--storage", url), "'nope'", "hand", "mixed")


def test_unknown_study_in_a_missing_file_does_not_create_it(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    fm.one_error_line(invoke("best", "nope", "--storage", f"sqlite:///{db}"), str(db))
    assert not db.exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_study_in_a_missing_journal_does_not_create_it(tmp_path: Path) -> None:
    journal = tmp_path / "missing.journal"
    fm.one_error_line(invoke("best", "nope", "--storage", f"journal://{journal}"), str(journal))
    assert list(tmp_path.iterdir()) == []


def test_default_storage_of_an_unknown_study_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fm.one_error_line(invoke("best", "nope"), "nope.db")
    assert list(tmp_path.iterdir()) == []


def test_load_study_raises_user_error_for_unknown_name(url: str) -> None:
    with pytest.raises(UserError, match="no study named 'nope'"):
        chooser.load_study("nope", url)


def test_load_complete_reads_only_complete_trials(url: str) -> None:
    study, trials = chooser.load_complete("hand", url)
    every = study.get_trials()
    assert any(t.state != TrialState.COMPLETE for t in every)
    assert [t.number for t in trials] == [
        t.number for t in every if t.state == TrialState.COMPLETE]


def test_choose_by_trial_number_refuses_pruned_and_diverged(url: str) -> None:
    trials = chooser.load_study("hand", url).get_trials()
    assert chooser.choose(trials, "hand", trial=4).number == 4  # dominated, but asked for
    for number in (5, 6, 99):
        with pytest.raises(UserError, match=f"--trial: no completed trial {number} in study "
                                            "'hand'"):
            chooser.choose(trials, "hand", trial=number)


# -- the accuracy floor ----------------------------------------------------------------------


def floored_study(tmp_path: Path, floor: Any = None) -> str:
    """Baseline (trial 0, marked as enqueued) at 0.95 in 2 s; trial 1 at 0.80 in 0.1 s is
    below the default floor (0.95 - 0.05 = 0.90); trial 2 at 0.92 in 1 s is above it."""
    storage = f"sqlite:///{tmp_path / 'floor.db'}"
    trials = [completed(0, 0.95, 2.0), completed(1, 0.80, 0.1), completed(2, 0.92, 1.0)]
    trials[0].user_attrs["baseline"] = True
    study = make_study(storage, "floor", trials)
    if floor is not None:
        study.set_user_attr("recipe", {**RECIPE, "name": "floor", "floor": floor})
    return storage


def test_a_point_below_the_floor_is_never_chosen(tmp_path: Path) -> None:
    storage = floored_study(tmp_path)
    # Within 0.5 s only trial 1 fits, and it is below the floor: nothing to choose.
    result = invoke("best", "floor", "--storage", storage, "--max-seconds", "0.5")
    assert result.exit_code == 2
    assert best_json(storage, "--max-seconds", "1.5", name="floor")["trial"] == 2
    assert best_json(storage, "--min-accuracy", "0.5", name="floor")["trial"] == 2


def test_the_floor_follows_the_recipe(tmp_path: Path) -> None:
    # An absolute floor of 0.75 admits trial 1; `none` turns the floor off.
    for i, floor in enumerate(({"accuracy": 0.75}, "none")):
        (tmp_path / str(i)).mkdir()
        storage = floored_study(tmp_path / str(i), floor)
        assert best_json(storage, "--max-seconds", "0.5", name="floor")["trial"] == 1


def test_status_says_the_floor_and_how_many_points_are_below_it(tmp_path: Path) -> None:
    storage = floored_study(tmp_path)
    result = invoke("status", "floor", "--storage", storage)
    assert result.exit_code == 0, result.output
    assert "front 2" in result.stdout
    assert "accuracy floor 0.9000 (0.05 below the baseline), 1 below it" in result.stdout


def test_a_time_to_accuracy_study_has_no_floor_its_target_says_what_is_worth_having(
        tmp_path: Path) -> None:
    from search.tuning import floor as floors

    pareto = optuna.load_study(study_name="floor", storage=floored_study(tmp_path))
    assert floors.of_study(pareto, pareto.trials) == pytest.approx(0.90)
    tta = optuna.create_study(direction="minimize")
    tta.set_user_attr("recipe", {**RECIPE, "name": "tta"})
    tta.add_trial(create_trial(value=1.0, user_attrs={"baseline": True, "result": {
        "accuracy": 0.95}}))
    assert floors.of_study(tta, tta.trials) is None
