"""Data-parallel trials on the CPU (DistributedDataParallel over Gloo): the default study's
task in 2 processes trains to the accuracy of 1 process with the same global batch, is
one trial with every rank's samples counted, and a killed process ends the run without
leaving a process behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from search.errors import UserError
from search.training.config import TrainConfig
from search.training.data import DataSpec
from search.training.engine import train
from search.training.models import ModelSpec
from tests import faultmodels as fm

DATA = DataSpec("mnist5k", classes=(5, 6, 7, 8, 9), image_size=14)  # the default study's
MODEL = ModelSpec("cnn", width=16, weights="pretrained:mnist5k-0-4")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_processes_train_as_one_with_the_same_global_batch() -> None:
    config = TrainConfig(optimizer="adam", lr=0.002, batch_size=64, epochs=3)
    one = train(config, DATA, MODEL, device="cpu")
    two = train(config.replace(data_parallel=2), DATA, MODEL, device="cpu")
    assert one.outcome == two.outcome == "completed"
    # The same examples in the same global batches and an averaged gradient: the same
    # accuracy range (not bit for bit: the all-reduce sums in another order).
    assert abs(two.accuracy - one.accuracy) <= 0.02, (one.accuracy, two.accuracy)
    assert two.device["processes"] == 2 and two.device["key"].endswith(" data-parallel 2")
    assert one.device["processes"] == 1 and "data-parallel" not in one.device["key"]
    # One record for the run, every rank's samples in it: 3 epochs of 1,500 examples.
    assert two.samples_per_second * two.train_seconds == pytest.approx(3 * 1500, rel=1e-6)
    assert len(two.curve) == 3 and two.test_accuracy is not None


def test_data_parallel_refuses_a_batch_that_does_not_split(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data_parallel: batch_size 63 does not split evenly "
                                        "into 2 processes"):
        TrainConfig(batch_size=63, data_parallel=2)
    with pytest.raises(UserError, match="data_parallel: this worker has 2 devices"):
        train(TrainConfig(batch_size=64, data_parallel=4), DATA, MODEL, device="cpu",
              devices=[__import__("torch").device("cpu")] * 2)


def _children() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("search-rank")]


def test_a_killed_rank_ends_the_run_and_leaves_no_process_behind() -> None:
    config = TrainConfig(optimizer="adam", lr=0.002, batch_size=64, epochs=30,
                         data_parallel=2)
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            train(config, DATA, MODEL, device="cpu")
        except BaseException as e:  # noqa: BLE001 - the test reads it
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    [child] = fm.wait_for(lambda: _children() or None, timeout=60, what="rank 1 to start")
    time.sleep(3)  # into training
    os.kill(child.pid, signal.SIGKILL)
    thread.join(timeout=200)
    assert not thread.is_alive(), "the lead still waits on its killed rank"
    assert "a data-parallel process failed: rank 1" in str(outcome.get("error")), outcome
    assert _children() == []


def test_a_killed_lead_leaves_no_rank_behind(tmp_path: Path) -> None:
    # `search train` is the lead; SIGKILL gives it no chance to stop its rank, which
    # notices its parent is gone and exits.
    path = fm.write_recipe(tmp_path, "lr: {low: 1.0e-3, high: 1.0e-2}\n", epochs=40,
                           data={"name": "mnist5k", "classes": [5, 6, 7, 8, 9],
                                 "image_size": 14},
                           model={"name": "cnn", "width": 16,
                                  "weights": "pretrained:mnist5k-0-4"},
                           baseline={"optimizer": "adam", "lr": 0.002, "batch_size": 64,
                                     "data_parallel": 2})
    lead = fm.spawn("train", str(path), "--device", "cpu", threads=1)

    def ranks() -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(lead.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    try:
        children = fm.wait_for(lambda: [p for p in ranks() if _is_rank(p)] or None,
                               timeout=120, what="the lead to start its rank", procs=[lead])
        time.sleep(2)
        lead.kill()
        lead.wait(timeout=30)
        fm.wait_for(lambda: not any(_alive(p) for p in children), timeout=30,
                    what="the orphaned rank to exit")
    finally:
        fm.stop([lead])


def _is_rank(pid: int) -> bool:
    try:
        return "multiprocessing" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_study_searches_data_parallel_and_records_one_trial_per_run(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from search.tuning.loop import optimize_recipe
    from search.tuning.recipe import load

    fm.pretrained()
    path = fm.write_recipe(tmp_path, "data_parallel: {choices: [1, 2]}\n", trials=3,
                           baseline={"optimizer": "adam", "lr": 0.003, "batch_size": 64,
                                     "data_parallel": 2}, probes=False)
    summary = optimize_recipe(load(path), progress=False, device="cpu")
    trials = summary.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # one trial per run
    baseline = trials[0]
    assert baseline.params == {"data_parallel": 2}
    assert baseline.user_attrs["device"].endswith(" data-parallel 2")
    assert baseline.user_attrs["result"]["device"]["processes"] == 2
    # Trials in one process carry the one-process key: the two are never ranked together.
    for t in trials[1:]:
        parallel = t.params["data_parallel"] == 2
        assert t.user_attrs["device"].endswith(" data-parallel 2") == parallel


def test_a_compiled_model_runs_compiled_in_every_process() -> None:
    # DDP wraps the compiled model, so DDP's hooks never split the graph (compiling the
    # DDP wrapper instead fell back to eager for 3 frames, at 2.5x the time).
    result = train(TrainConfig(optimizer="adam", lr=0.003, batch_size=64, epochs=2,
                               compile=True, data_parallel=2), "digits", "cnn", device="cpu")
    assert result.outcome == "completed"
    assert result.tricks["compile"]["ran_compiled"], result.tricks["compile"]
    assert result.tricks["compile"]["graph_breaks"] == 0


def test_a_rank_out_of_memory_makes_the_run_oom_and_ends_every_process() -> None:
    result = train(TrainConfig(optimizer="adam", lr=0.003, batch_size=64, epochs=2,
                               data_parallel=2), "digits",
                   ModelSpec("tests.faultmodels:oom_in_rank_one"), device="cpu")
    assert result.outcome == "oom", (result.outcome, result.reason)
    assert result.reason.startswith("rank 1: out of memory"), result.reason
    assert _children() == []
