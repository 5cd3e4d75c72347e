"""`search verify`: flags on hand-built verdicts, and re-runs of a tiny real study stored in
the companion study `NAME:verify`, reused on the next call, printed as a table and drawn
as error bars by `search pareto`."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner, Result

from search.cli import cli
from search.errors import UserError
from search.reviewing import frontier
from search.reviewing import verify as verifier
from search.reviewing.verify import Verdict, flag
from tests import faultmodels as fm

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = ("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
         "batch_size: {choices: [64, 128]}\n"
         "frozen_layers: {low: 0, high: max}\n")


pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# -- flag() on hand-built verdicts -----------------------------------------------------


def test_a_config_whose_mean_is_dominated_is_flagged_dominated() -> None:
    # a's repeats fall to (0.90, 3.0); b holds at (0.94, 2.5): b's mean beats a's mean,
    # whether or not the original run is counted in the mean.
    a = Verdict(0, (0.95, 2.0), [(0.90, 3.0), (0.90, 3.0)])
    b = Verdict(1, (0.94, 2.5), [(0.94, 2.5), (0.94, 2.5)])
    flag([a, b])
    assert "dominated" in a.flags
    assert b.flags == []


def test_equal_means_do_not_dominate_each_other() -> None:
    a = Verdict(0, (0.94, 2.5), [(0.94, 2.5)])
    b = Verdict(1, (0.94, 2.5), [(0.94, 2.5)])
    assert [v.flags for v in flag([a, b])] == [[], []]


@pytest.mark.parametrize("runs", [2, 3, 9])
def test_an_original_run_outside_two_std_of_its_repeats_is_optimistic(runs: int) -> None:
    # The single original run (0.99) was luck: its repeats sit at 0.90-0.91, far more than
    # 2 std (about 0.005) away. With a few repeats this must be caught too: verify's
    # default is 3 repeats and this test's real study uses 2.
    repeats = [(0.90 + 0.01 * (k % 2), 1.0) for k in range(runs)]
    v = flag([Verdict(0, (0.99, 1.0), repeats)])[0]
    assert "optimistic" in v.flags, (v.accuracy_mean, v.accuracy_std)


def test_an_original_run_much_faster_than_its_repeats_is_optimistic() -> None:
    v = flag([Verdict(0, (0.95, 1.0), [(0.95, 2.0), (0.95, 2.1), (0.95, 1.9)])])[0]
    assert "optimistic" in v.flags, (v.seconds_mean, v.seconds_std)


def test_a_stable_config_gets_no_flags() -> None:
    stable = Verdict(0, (0.95, 2.0), [(0.951, 2.02), (0.949, 1.98), (0.950, 2.01)])
    faster = Verdict(1, (0.90, 1.0), [(0.901, 1.01), (0.899, 0.99)])
    assert [v.flags for v in flag([stable, faster])] == [[], []]
    assert stable.accuracy_mean == pytest.approx(0.95, abs=1e-3)
    assert 0 < stable.seconds_std < 0.05


def test_flag_resets_previous_flags() -> None:
    v = Verdict(0, (0.95, 2.0), [(0.95, 2.0)], flags=["dominated"])
    assert flag([v])[0].flags == []


def test_a_verdict_without_repeats_is_its_original_point() -> None:
    v = Verdict(3, (0.9, 1.5))
    assert (v.accuracy_mean, v.seconds_mean, v.accuracy_std, v.seconds_std) == (0.9, 1.5, 0, 0)
    assert flag([v])[0].flags == []


# -- verify() on a tiny real study --------------------------------------------------------


def write_recipe(folder: Path) -> Path:
    (folder / "space.yaml").write_text(SPACE, encoding="utf-8")
    raw = {"name": "tiny", "data": {"name": "digits", "classes": [5, 6, 7, 8, 9]},
           "model": {"name": "cnn", "weights": "pretrained:digits-0-4"},
           "space": "space.yaml", "epochs": 2, "trials": 3, "sampler": "random",
           "pruner": {"name": "pareto-sha", "eta": 3, "min_resource": 1}, "seed": 0,
           "baseline": {"optimizer": "adam", "lr": 0.003, "batch_size": 64}}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`search run` of a 3-trial, 2-epoch recipe; the study's storage URL."""
    fm.one_thread()
    folder = tmp_path_factory.mktemp("verify")
    url = f"sqlite:///{folder / 'tiny.db'}"
    result = invoke("run", str(write_recipe(folder)), "--quiet", "--device", "cpu",
                    "--storage", url)
    assert result.exit_code == 0, result.output
    return url


@pytest.fixture(scope="module")
def verified(study_url: str) -> list[Verdict]:
    """verify(top=1, repeats=2) once: the verdicts it returned."""
    fm.one_thread()
    study = optuna.load_study(study_name="tiny", storage=study_url)
    return verifier.verify(study, top=1, repeats=2, device="cpu")


def _front(study: optuna.Study) -> list[frontier.Point]:
    return frontier.pareto_front(frontier.points(study.get_trials(deepcopy=False)))


def test_verify_stores_the_repeats_in_the_companion_study(study_url: str,
                                                          verified: list[Verdict]) -> None:
    study = optuna.load_study(study_name="tiny", storage=study_url)
    names = {s.study_name for s in optuna.get_all_study_summaries(study_url)}
    assert names == {"tiny", "tiny:verify"}
    companion = optuna.load_study(study_name="tiny:verify", storage=study_url)
    assert companion.directions == study.directions
    repeats = companion.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(repeats) == 2
    most_accurate = max(_front(study), key=lambda p: (p.accuracy, -p.seconds))
    original = study.trials[most_accurate.number]
    seed = original.user_attrs["config"]["seed"]
    assert {t.user_attrs["original"] for t in repeats} == {most_accurate.number}
    seeds = [t.user_attrs["seed"] for t in repeats]
    assert len(set(seeds)) == 2 and seed not in seeds
    for t in repeats:
        result = t.user_attrs["result"]
        assert 0.0 <= result["accuracy"] <= 1.0 and result["seconds"] > 0
        assert t.values == pytest.approx([result["accuracy"], result["seconds"]])
        assert result["config"]["seed"] == t.user_attrs["seed"]
        # The same config but the seed, stopped where the original stopped.
        ran = original.user_attrs["result"]["epochs_run"]
        assert {**result["config"], "seed": seed} == {**original.user_attrs["config"],
                                                      "stop_after": ran}
        # Seconds are only compared within one device.
        assert t.user_attrs["device"] == original.user_attrs["device"]
        # A repeat stops where the original stopped (a stopped trial's point is the best
        # of the epochs it ran), so it measures the same point.
        assert result["epochs_run"] == original.user_attrs["result"]["epochs_run"]


def test_verify_returns_one_verdict_per_front_config(study_url: str,
                                                     verified: list[Verdict]) -> None:
    study = optuna.load_study(study_name="tiny", storage=study_url)
    assert len(verified) == 1
    v = verified[0]
    assert v.original == tuple(study.trials[v.trial].values)
    assert len(v.repeats) == 2
    assert verifier.stored_repeats(study) == {v.trial: v.repeats}
    assert set(v.flags) <= {"dominated", "optimistic"}


def test_a_second_verify_reuses_the_stored_repeats(study_url: str, verified: list[Verdict],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("verify trained again although the repeats are stored")

    monkeypatch.setattr("search.training.engine.train", no_training)
    study = optuna.load_study(study_name="tiny", storage=study_url)
    again = verifier.verify(study, top=1, repeats=2, device="cpu")
    assert [(v.trial, v.repeats) for v in again] == [(v.trial, v.repeats) for v in verified]
    assert len(optuna.load_study(study_name="tiny:verify", storage=study_url).trials) == 2


def test_cli_verify_prints_a_table_of_verdicts(study_url: str, verified: list[Verdict]) -> None:
    result = invoke("verify", "tiny", "--storage", study_url, "--top", "1", "--repeats", "2",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "repeat" not in result.stderr  # nothing re-run: both repeats were stored
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[0] == "trial" and "flags" in lines[0]
    row = lines[1].split()
    assert int(row[0]) == verified[0].trial
    assert int(row[7]) == 3  # runs: the original and 2 repeats
    assert row[8:] in (["holds"], ["dominated"], ["optimistic"], ["dominated,", "optimistic"])
    assert "tiny:verify" in lines[-1]
    assert len(lines) == 3


def test_pareto_draws_the_repeats_as_error_bars(study_url: str, verified: list[Verdict],
                                                tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    result = invoke("pareto", "tiny", "--storage", study_url, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout
    assert "re-run mean" in out.read_text(encoding="utf-8")


def test_report_with_repeats_is_written(study_url: str, verified: list[Verdict],
                                        tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = invoke("report", "tiny", "--storage", study_url, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0


def test_verify_never_mixes_devices(study_url: str, verified: list[Verdict],
                                    tmp_path: Path) -> None:
    """Repeats measured on another device fingerprint (here: another thread count, which
    is part of the CPU key) must not be compared with the original: verify refuses, or at
    least stores no repeat from another device."""
    import torch

    shutil.copy(study_url.removeprefix("sqlite:///"), tmp_path / "copy.db")
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    study = optuna.load_study(study_name="tiny", storage=url)
    key = study.trials[verified[0].trial].user_attrs["device"]
    torch.set_num_threads(2)
    try:
        verifier.verify(study, top=1, repeats=3, device="cpu", device_key=key)
    except UserError:
        pass
    finally:
        torch.set_num_threads(1)
    companion = optuna.load_study(study_name="tiny:verify", storage=url)
    assert {t.user_attrs["device"] for t in companion.trials} == {key}


def test_verify_of_a_time_to_accuracy_study_times_its_repeats_to_the_target(
        tmp_path: Path) -> None:
    # Repeats of a time-to-accuracy study stop at the study's target, as its trials did,
    # and their seconds are time to the target (not time to their best epoch).
    fm.one_thread()
    target = 0.5  # every sound config of the tiny space reaches it within its epochs
    path = fm.write_recipe(tmp_path, SPACE, objective="time-to-accuracy", target=target,
                           epochs=4, trials=2)
    assert invoke("run", str(path), "--quiet", "--device", "cpu").exit_code == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny.db'}")
    [verdict] = verifier.verify(study, top=1, repeats=1, device="cpu")
    [repeat] = verifier.companion(study).get_trials(deepcopy=False)
    result = repeat.user_attrs["result"]
    assert result["config"]["stop_after"] is None  # free to run past the original's epochs
    # Stopped at the epoch that first reached the target; its seconds are time to target.
    assert result["accuracy"] >= target and result["reason"].startswith("reached target")
    assert result["best_epoch"] == result["epochs_run"] < 4
    assert repeat.user_attrs["outcome"] == "completed"
    assert repeat.values == [result["seconds"]] and verdict.flags == []


def test_repeats_that_missed_the_target_are_flagged() -> None:
    v = flag([Verdict(0, (0.95, 1.0), [(0.95, 1.0), (0.93, 3.0), (0.92, 3.0)], missed=2)])[0]
    assert "missed target 2x" in v.flags
