"""Workers placed by Ray (`search run --ray`): a local Ray instance on the CPU, a real
PostgreSQL study, each enqueued config run exactly once, and a worker killed mid-trial
replaced until the budget is met."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.errors import UserError
from search.tuning import recipe as recipes
from search.tuning.cluster import Placement, place
from search.tuning.study import open_study, plan_for
from tests import faultmodels as fm
from tests.test_faults import retries_of
from tests.test_workers import BASELINE, SPACE, WAIT, check_budget_met

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
ray = pytest.importorskip("ray", reason="Ray is optional (pip install 'search[ray]')")
# Short heartbeats, so a killed worker's trial is failed within seconds.
FAST = {"SEARCH_HEARTBEAT_SECONDS": "1", "SEARCH_GRACE_SECONDS": "3"}


def test_one_worker_per_gpu_else_per_cores() -> None:
    assert place({"CPU": 16, "GPU": 4}, cores=2, workers=None) == Placement(4, 1, 1)
    assert place({"CPU": 16, "GPU": 4}, cores=2, workers=2) == Placement(2, 1, 1)
    assert place({"CPU": 16}, cores=4, workers=None) == Placement(4, 0, 4)
    assert place({"CPU": 3}, cores=1, workers=2) == Placement(2, 0, 1)
    with pytest.raises(UserError, match="fewer than --ray-cores 4"):
        place({"CPU": 2}, cores=4, workers=None)


def test_ray_refuses_sqlite_in_one_line(tmp_path: Path) -> None:
    path = fm.write_recipe(tmp_path, SPACE, baseline=BASELINE)
    done = fm.run("run", str(path), "--ray", "local", "--quiet", timeout=WAIT)
    assert done.returncode != 0
    assert "--ray: workers on a cluster share the study through its storage" in done.stderr
    fm.check_no_traceback(done.stderr)


def _run(path: Path, url: str, budget: int) -> subprocess.Popen:
    return fm.spawn("run", str(path), "--ray", "local", "--workers", "2", "--storage", url,
                    "--trials", str(budget), extra=FAST)


def test_ray_workers_finish_a_postgresql_study_running_each_queued_config_once(
        tmp_path: Path, postgres_url: str) -> None:
    fm.pretrained()
    path = fm.write_recipe(tmp_path, SPACE, baseline=BASELINE, probes=False)
    recipe = recipes.load(path)
    budget = 7  # the baseline (trial 0) and 6 queued configs
    study = open_study(recipe, plan_for(recipe), storage=postgres_url, trials=budget)
    queued = [{"lr": round(0.001 + 0.0015 * i, 6), "batch_size": (128, 256)[i % 2]}
              for i in range(6)]
    for params in queued:
        study.enqueue_trial(params)
    proc = _run(path, postgres_url, budget)
    code, _out, err = fm.finish(proc, timeout=WAIT)
    assert code == 0, err
    assert "ray: 2 workers (1 CPU cores each) on local" in err
    fm.check_no_traceback(err)
    trials = fm.trials_of(postgres_url, "tiny")
    check_budget_met(trials, budget)

    def key(params: dict) -> tuple:
        return tuple(sorted(params.items()))

    ran = Counter(key(t.params) for t in trials if t.state == TrialState.COMPLETE)
    assert ran == Counter(key(p) for p in [{"lr": 0.003, "batch_size": 128}, *queued])
    # Two workers, both placed by Ray (each its own process), did the work.
    assert len({t.user_attrs["worker"] for t in trials}) == 2


def test_a_ray_worker_killed_mid_trial_is_replaced_and_its_trial_run_again(
        tmp_path: Path, postgres_url: str) -> None:
    fm.pretrained()
    path = fm.write_recipe(tmp_path, SPACE, baseline=BASELINE, probes=False, epochs=6)
    recipe = recipes.load(path)
    open_study(recipe, plan_for(recipe), storage=postgres_url, trials=3)
    proc = _run(path, postgres_url, 3)
    try:
        doomed = fm.wait_for(lambda: fm.running_with_curve(postgres_url, "tiny"),
                             timeout=WAIT, what="a running trial with a curve", procs=[proc])
        os.kill(int(doomed.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        code, _out, err = fm.finish(proc, timeout=WAIT)
    finally:
        fm.stop([proc])
    assert code == 0, err
    assert "ray: a worker ended with" in err  # and a replacement took its place
    trials = fm.trials_of(postgres_url, "tiny")
    assert trials[doomed.number].state == TrialState.FAIL
    retries = retries_of(trials, doomed.number)
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == doomed.params
    done = Counter(t.state for t in trials)
    assert done[TrialState.COMPLETE] + done[TrialState.PRUNED] == 3, done
    assert done[TrialState.RUNNING] == done[TrialState.WAITING] == 0, done
