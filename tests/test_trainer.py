"""Your own loop, searched: the run API and recipes that name a trainer (``train:``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner

from search.cli import cli
from search.training.config import TrainConfig
from search.training.run import Run, Stop, run_trainer
from tests import usertrainers

ROOT = Path(__file__).resolve().parent.parent
SPACE = {"optimizer": {"choices": ["sgd", "adam"]}, "lr": {"low": 1e-3, "high": 0.3, "log": True},
         "epochs": {"low": 2, "high": 6}, "width_units": {"choices": [4, 8, 32]}}

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp: Path, trainer: str = "tests.usertrainers:linear", **fields: Any) -> Path:
    (tmp / "space.yaml").write_text(yaml.safe_dump(fields.pop("space", SPACE)))
    content = {"name": "own", "train": trainer, "space": "space.yaml", "epochs": 6,
               "trials": 10, "seed": 0, "storage": f"sqlite:///{tmp / 'own.db'}",
               "baseline": {"optimizer": "adam", "lr": 0.01, "batch_size": 32,
                            "width_units": 8}, **fields}
    path = tmp / "own.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# -- the run API -------------------------------------------------------------------------


def test_a_report_records_the_point_and_lets_the_study_stop_the_run() -> None:
    asked: list[tuple[int, float]] = []

    def decide(step: int, value: float, loss: float, seconds: float) -> str | None:
        asked.append((step, value))
        return "enough" if step == 2 else None

    run = Run(TrainConfig(), torch.device("cpu"), params={"h": 3}, decide=decide)
    with run.timed():
        sum(range(10_000))
    run.report(0.5)
    assert run.curve[0]["epoch"] == 1 and run.curve[0]["seconds"] == run.seconds > 0
    with pytest.raises(Stop, match="enough"):
        run.report(0.7)
    assert asked == [(1, 0.5), (2, 0.7)] and run.best() == 1 and run.params == {"h": 3}


def test_run_trainer_measures_a_users_loop() -> None:
    result = run_trainer(usertrainers.linear, TrainConfig(epochs=3, lr=0.05), device="cpu",
                         params={"width_units": 4}, warm=False)
    assert result.outcome == "completed" and result.epochs_run == 3
    assert result.accuracy == max(p["accuracy"] for p in result.curve) > 0.5
    assert 0 < result.seconds <= result.train_seconds
    assert result.test_accuracy is not None


def test_a_stopped_a_diverged_and_a_silent_trainer() -> None:
    stopped = run_trainer(usertrainers.linear, TrainConfig(epochs=4), device="cpu",
                          decide=lambda step, *_: step == 2 and "pruned here", warm=False)
    assert (stopped.outcome, stopped.reason, stopped.epochs_run) == ("pruned", "pruned here", 2)
    diverged = run_trainer(usertrainers.nan_after_one, TrainConfig(), device="cpu", warm=False)
    assert diverged.outcome == "diverged" and diverged.accuracy == 0.5
    assert math.isnan(diverged.final_accuracy)
    with pytest.raises(RuntimeError, match="without calling run.report"):
        run_trainer(usertrainers.silent, TrainConfig(), device="cpu", warm=False)


# -- a study of a user's trainer ---------------------------------------------------------


def test_a_trainer_recipe_is_searched_with_pruning_and_reviewed(tmp_path: Path) -> None:
    path = _recipe(tmp_path)
    out = _invoke("run", str(path), "--quiet", "--json")
    assert out.exit_code == 0, out.output
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{tmp_path / 'own.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 10
    assert done[0].params["width_units"] == 8  # the baseline's own param, enqueued
    assert {t.params.get("width_units") for t in done} <= {4, 8, 32}
    assert any(t.user_attrs["outcome"] == "pruned" for t in done)  # our pruner judged them
    for t in done:
        assert 0 <= t.values[0] <= 1 and t.values[1] > 0
        if t.user_attrs["outcome"] == "completed":  # returned: a stopped run has none
            assert t.user_attrs["result"]["test_accuracy"] is not None
    for command in (["status", "own"], ["best", "own", "--json"], ["pareto", "own", "-o",
                                                                 str(tmp_path / "p.html")]):
        shown = _invoke(*command, "--storage", f"sqlite:///{tmp_path / 'own.db'}")
        assert shown.exit_code == 0, shown.output
    best = json.loads(_invoke("best", "own", "--json", "--storage",
                              f"sqlite:///{tmp_path / 'own.db'}").output)
    assert best["params"]["epochs"] >= best["params"]["stop_after"]


def test_a_trainer_that_raises_fails_its_trial_and_the_study_goes_on(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "tests.usertrainers:fails_on_wide",
                   space={**SPACE, "width_units": {"choices": [8, 32]}}, trials=8)
    out = _invoke("run", str(path), "--quiet")
    assert out.exit_code == 0, out.output
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{tmp_path / 'own.db'}")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.user_attrs["outcome"] == "error" for t in failed)
    assert "no wide models here" in failed[0].user_attrs["traceback"]
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


@pytest.mark.parametrize(("trainer", "fields", "names"), [
    ("tests.nowhere:train", {}, ["train", "tests.nowhere"]),
    ("tests.usertrainers:missing", {}, ["train", "missing"]),
    ("no colon", {}, ["train", "module:function"]),
    ("tests.usertrainers:linear", {"data": {"name": "digits"}}, ["data", "train"]),
    ("tests.usertrainers:linear", {"baseline": {"depth_units": 3}}, ["baseline.depth_units"]),
    ("tests.usertrainers:linear",
     {"space": {**SPACE, "width_units": {"choices": [4, 8], "optional": True}}},
     ["width_units.optional", "always sampled"]),
])
def test_a_bad_trainer_recipe_is_one_line(tmp_path: Path, trainer: str, fields: dict,
                                          names: list[str]) -> None:
    out = CliRunner().invoke(cli, ["run", str(_recipe(tmp_path, trainer, **fields)),
                                   "--quiet"])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in names), lines
    assert not (tmp_path / "own.db").exists()


def test_the_tabular_example_runs_as_its_readme_says(tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "examples/tabular.yaml").read_text())
    recipe.update(storage=f"sqlite:///{tmp_path / 'tabular.db'}",
                  space=str(ROOT / "examples/tabular-space.yaml"))
    path = tmp_path / "tabular.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = _invoke("run", str(path), "--trials", "6", "--quiet")
    assert out.exit_code == 0, out.output
    assert "Pareto front of 'tabular'" in out.output


def test_a_named_metric_is_shown_under_its_name(tmp_path: Path) -> None:
    out = _invoke("run", str(_recipe(tmp_path, metric="f1", trials=4)), "--quiet")
    assert out.exit_code == 0, out.output
    assert "val f1" in out.output and "test f1" in out.output and "val acc" not in out.output
    status = _invoke("status", "own", "--storage", f"sqlite:///{tmp_path / 'own.db'}")
    assert "best f1" in status.output and "f1 floor" in status.output


def test_a_minimized_metric_makes_a_front_in_the_right_direction(tmp_path: Path) -> None:
    from search.reviewing import report

    path = _recipe(tmp_path, "tests.usertrainers:cross_entropy", trials=12,
                   metric={"name": "loss", "direction": "minimize"}, floor="none",
                   space={k: v for k, v in SPACE.items() if k != "width_units"},
                   baseline={"optimizer": "adam", "lr": 0.01, "batch_size": 32})
    out = _invoke("run", str(path), "--quiet")
    assert out.exit_code == 0, out.output
    assert "val loss" in out.output
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{tmp_path / 'own.db'}")
    rows = report.front_rows(study)
    losses = [r["accuracy"] for r in rows]  # fastest first: each slower one has a lower loss
    assert len(rows) >= 2 and all(a > b for a, b in zip(losses, losses[1:], strict=False))
    assert all(v > 0 for v in losses)  # the loss itself, not its score
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    lowest = min(-t.values[0] for t in done)  # the study stores scores: -loss
    assert losses[-1] == pytest.approx(lowest)
    url = f"sqlite:///{tmp_path / 'own.db'}"
    best = json.loads(_invoke("best", "own", "--json", "--storage", url).output)
    assert best["metric"] == "loss" and best["accuracy"] > 0
    reach = losses[len(losses) // 2]  # the fastest config whose loss is at most this
    picked = json.loads(_invoke("best", "own", "--json", "--storage", url,
                                "--min-accuracy", str(reach)).output)
    assert picked["accuracy"] == pytest.approx(reach)
    for command in (["report", "own", "-o", str(tmp_path / "r.html")],
                    ["export", "own", "-o", str(tmp_path / "best.yaml")]):
        assert _invoke(*command, "--storage", url).exit_code == 0
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())["measured"]
    assert exported["metric"] == "loss"  # the knee: a front point, as its loss
    assert any(exported["val_accuracy"] == pytest.approx(v) for v in losses)


def test_the_engine_takes_no_other_metric(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "metric": "f1"}))
    out = CliRunner().invoke(cli, ["run", str(path), "--quiet"])
    assert out.exit_code == 2 and "metric" in out.output and "train:" in out.output


# -- the built-in engine on inputs that are not images -----------------------------------


@pytest.mark.parametrize(("data", "model"), [("tests.usermodels:cancer_features",
                                              "tests.usermodels:mlp"),
                                             ("tests.usermodels:token_ids",
                                              "tests.usermodels:bag_of_tokens")])
def test_the_engine_trains_features_and_token_ids(data: str, model: str) -> None:
    from search.training.data import DataSpec
    from search.training.data import load as load_data
    from search.training.engine import train
    from search.training.models import ModelSpec

    loaded = load_data(DataSpec(data))
    assert not loaded.images
    integer = not loaded.tensors["train"][0].is_floating_point()
    assert integer == data.endswith("token_ids")  # token ids stay integers
    result = train(TrainConfig(epochs=8, lr=0.02, batch_size=32), loaded, ModelSpec(model),
                   device="cpu", warm=False)
    assert result.outcome == "completed" and result.accuracy > 0.8
    assert result.test_accuracy is not None and result.flops_per_sample > 0


@pytest.mark.parametrize(("fields", "names"), [
    ({"model": {"name": "cnn"}}, ["model.name", "cnn takes images", "(N, 30)"]),
    ({"baseline": {"mixup_alpha": 0.2}}, ["baseline", "mixup_alpha", "not images"]),
    ({"space_text": "channels_last: {choices: [false, true]}\n"},
     ["space", "channels_last", "not images"]),
])
def test_image_tricks_and_models_are_refused_for_other_inputs_at_load(
        tmp_path: Path, fields: dict, names: list[str]) -> None:
    (tmp_path / "space.yaml").write_text(fields.pop("space_text", "lr: {low: 0.001, high: 0.1}\n"))
    recipe = {"name": "rows", "data": {"name": "tests.usermodels:cancer_features"},
              "model": {"name": "tests.usermodels:mlp"}, "space": "space.yaml", "epochs": 2,
              "trials": 2, "storage": f"sqlite:///{tmp_path / 'rows.db'}", **fields}
    path = tmp_path / "rows.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = CliRunner().invoke(cli, ["run", str(path), "--quiet"])
    assert out.exit_code == 2, out.output
    line = out.output.strip()
    assert "\n" not in line and all(n in line for n in names), line
    assert not (tmp_path / "rows.db").exists()


def test_time_to_a_minimized_target(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "tests.usertrainers:cross_entropy", trials=4,
                   objective="time-to-accuracy", target=0.4, pruner="none",
                   metric={"name": "loss", "direction": "minimize"},
                   space={k: v for k, v in SPACE.items() if k != "width_units"},
                   baseline={"optimizer": "adam", "lr": 0.05, "batch_size": 32})
    out = _invoke("run", str(path), "--quiet")
    assert out.exit_code == 0, out.output
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{tmp_path / 'own.db'}")
    reached = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert reached  # the baseline gets its loss below 0.4
    for t in reached:  # stopped at the first epoch whose loss was at most the target
        losses = [-p["accuracy"] for p in t.user_attrs["curve"]]
        assert losses[-1] <= 0.4 and all(v > 0.4 for v in losses[:-1])


def test_verify_reruns_a_trainers_front_with_its_own_params(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'own.db'}"
    assert _invoke("run", str(_recipe(tmp_path, trials=5)), "--quiet").exit_code == 0
    out = _invoke("verify", "own", "--storage", url, "--top", "1", "--repeats", "1")
    assert out.exit_code == 0, out.output
    repeats = optuna.load_study(study_name="own:verify", storage=url).trials
    assert repeats and repeats[0].user_attrs["result"]["accuracy"] > 0.5


def test_the_plots_draw_a_minimized_metric_itself_better_up(tmp_path: Path) -> None:
    from search import metric as metrics
    from search.reviewing import plots

    path = _recipe(tmp_path, "tests.usertrainers:cross_entropy", trials=8,
                   metric={"name": "loss", "direction": "minimize"}, floor="none",
                   space={k: v for k, v in SPACE.items() if k != "width_units"},
                   baseline={"optimizer": "adam", "lr": 0.01, "batch_size": 32})
    assert _invoke("run", str(path), "--quiet").exit_code == 0
    study = optuna.load_study(study_name="own", storage=f"sqlite:///{tmp_path / 'own.db'}")
    data = plots.pareto_data(study.trials, device=None, metric=metrics.of_study(study))
    assert all(m.accuracy > 0 for m in data.front)  # the loss, not its score
    losses = [m.accuracy for m in data.front]  # fastest first
    assert losses == sorted(losses, reverse=True)
    fig = plots.pareto_figure(data)
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.yaxis.title.text.startswith("validation loss")
    assert "loss" in data.front[0].hover


def test_reports_every_n_steps_count_fractions_of_an_epoch() -> None:
    seen: list[float] = []
    result = run_trainer(usertrainers.half_epochs, TrainConfig(epochs=3), device="cpu",
                         warm=False, decide=lambda step, *_: seen.append(step))
    assert seen == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert (result.epochs_run, result.best_epoch) == (3, 3)  # whole epochs: reproducible
    worse = run_trainer(usertrainers.half_epochs, TrainConfig(epochs=3), device="cpu",
                        warm=False, decide=lambda step, *_: step == 1.5 and "pruned")
    assert (worse.outcome, worse.epochs_run, worse.best_epoch) == ("pruned", 2, 2)
