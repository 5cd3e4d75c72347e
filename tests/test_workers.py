"""Several worker processes on one study: PostgreSQL (`search worker` x 3), a journal file
(`search run --workers N`), and the refusal of SQLite for parallel writers.

Every worker is a real `python -m search` process; the study's trials are read back from
the storage. Budgets are exact: `trials` counts finished trials across all workers.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from unittest import mock

import optuna
import pytest
from optuna.trial import TrialState

from search.errors import UserError
from search.tuning import recipe as recipes
from search.tuning.storage import open_storage
from search.tuning.study import open_study, plan_for
from tests import faultmodels as fm

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

# Batches of 128 or 256 of 716 examples: a 2-epoch trial is a few optimizer steps.
SPACE = "lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nbatch_size: {choices: [128, 256]}\n"
BASELINE = {"optimizer": "adam", "lr": 0.003, "batch_size": 128}
BUDGET = 6
WAIT = 300  # seconds: a hang guard for a whole multi-worker run on a busy 2-core machine


def check_budget_met(trials: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """Exactly ``budget`` finished trials, unique numbers, nothing left running or queued;
    a failed trial may only be a surplus one (two workers asked for the last slot)."""
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), numbers
    assert sorted(numbers) == list(range(len(numbers)))
    by_state = Counter(t.state for t in trials)
    assert by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED] == budget, by_state
    assert by_state[TrialState.RUNNING] == by_state[TrialState.WAITING] == 0, by_state
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("outcome") == "surplus", (t.number, t.user_attrs)
        else:
            assert t.user_attrs["outcome"] == "completed" and t.user_attrs["curve"]


def test_three_workers_on_postgresql_share_one_study_and_meet_its_budget(
        tmp_path: Path, postgres_url: str) -> None:
    fm.pretrained()
    path = fm.write_recipe(tmp_path, SPACE, storage=postgres_url, baseline=BASELINE)
    recipe = recipes.load(path)
    open_study(recipe, plan_for(recipe), trials=BUDGET)  # the study, made once
    args = ("worker", "tiny", "--storage", postgres_url, "--trials", str(BUDGET),
            "--device", "cpu", "--threads", "1", "--quiet")
    procs = [fm.spawn(*args, threads=1) for _ in range(3)]
    try:
        results = [fm.finish(p, timeout=WAIT) for p in procs]
    finally:
        fm.stop(procs)

    ran = 0
    for code, _out, err in results:
        assert code == 0, err
        assert "database is locked" not in err, err
        fm.check_no_traceback(err)
        match = re.fullmatch(r"worker ran (\d+) trials in \d+s", fm.stderr_lines(err)[-1])
        assert match, err
        ran += int(match.group(1))
    assert ran == BUDGET  # each finished trial counted by exactly one worker

    trials = fm.trials_of(open_storage(postgres_url, must_exist=True), "tiny")
    check_budget_met(trials, BUDGET)
    pids = {f":{p.pid}" for p in procs}
    for t in trials:
        assert any(t.user_attrs["worker"].endswith(pid) for pid in pids), t.user_attrs
    assert trials[0].params == {"lr": 0.003, "batch_size": 128}  # the baseline went first


def test_local_workers_on_a_journal_file_meet_the_budget_without_a_server(
        tmp_path: Path) -> None:
    fm.pretrained()
    path = fm.write_recipe(tmp_path, SPACE, baseline=BASELINE)
    url = f"journal://{tmp_path / 'tiny.journal'}"
    parent = fm.spawn("run", str(path), "--workers", "3", "--storage", url,
                      "--trials", str(BUDGET), "--quiet")
    try:
        code, out, err = fm.finish(parent, timeout=WAIT)
    finally:
        fm.stop([parent])
    assert code == 0, err
    assert "database is locked" not in err + out
    fm.check_no_traceback(err)
    assert f"ran {BUDGET} trials" in out, out
    assert not (tmp_path / "tiny.db").exists()  # the recipe's own storage was not touched
    trials = fm.trials_of(open_storage(url, must_exist=True), "tiny")
    check_budget_met(trials, BUDGET)
    workers = {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE}
    assert not any(w.endswith(f":{parent.pid}") for w in workers)  # its workers ran them


def test_several_workers_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    path = fm.write_recipe(tmp_path, SPACE, baseline=BASELINE)
    done = fm.run("run", str(path), "--workers", "2", "--quiet", timeout=60)
    lines = fm.stderr_lines(done.stderr)
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "--workers 2" in lines[0] and "SQLite" in lines[0], lines
    assert "journal://" in lines[0]  # says what to use instead
    assert not (tmp_path / "tiny.db").exists()


def test_a_worker_on_sqlite_notes_that_it_serves_one_worker_at_a_time(tmp_path: Path) -> None:
    path = fm.write_recipe(tmp_path, SPACE, trials=1, baseline=BASELINE)
    recipe = recipes.load(path)
    open_study(recipe, plan_for(recipe))
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    done = fm.run("worker", "tiny", "--storage", url, "--device", "cpu", timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert "note: SQLite serves one worker at a time" in done.stderr
    assert "journal:///" in done.stderr  # says what to use instead
    quiet = fm.run("worker", "tiny", "--storage", url, "--device", "cpu", "--quiet",
                   timeout=WAIT)
    assert quiet.returncode == 0 and "note:" not in quiet.stderr, quiet.stderr


def test_enqueued_configs_each_run_exactly_once_on_four_workers(tmp_path: Path) -> None:
    fm.pretrained()
    path = fm.write_recipe(tmp_path, SPACE, baseline=BASELINE, probes=False)
    url = f"journal://{tmp_path / 'tiny.journal'}"
    recipe = recipes.load(path)
    budget = 21  # the baseline (queued by open_study as trial 0) and 20 configs
    study = open_study(recipe, plan_for(recipe), storage=url, trials=budget)
    queued = [{"lr": round(0.001 + 0.0004 * i, 6), "batch_size": (128, 256)[i % 2]}
              for i in range(20)]
    for params in queued:
        study.enqueue_trial(params)

    done = fm.run("run", str(path), "--workers", "4", "--storage", url,
                  "--trials", str(budget), "--quiet", timeout=WAIT)
    assert done.returncode == 0, done.stderr
    fm.check_no_traceback(done.stderr)

    trials = fm.trials_of(open_storage(url, must_exist=True), "tiny")
    check_budget_met(trials, budget)
    assert len(trials) == budget  # no sampled trial: the queue filled the budget

    def key(params: dict) -> tuple:
        return tuple(sorted(params.items()))

    ran = Counter(key(t.params) for t in trials if t.state == TrialState.COMPLETE)
    assert ran == Counter(key(p) for p in [{"lr": 0.003, "batch_size": 128}, *queued])
    # Four trainings shared the CPU: every trial says so, in its device key too, so its
    # seconds are never ranked against a worker's that had the machine to itself.
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["device"].endswith(" shared by 4"), t.user_attrs["device"]
            assert t.user_attrs["result"]["device"]["shared"] == 4


def test_cpu_workers_are_pinned_to_disjoint_cores_where_there_are_enough() -> None:
    from search.tuning.workers import plan_launch

    url = "journal:///tmp/x.journal"
    with mock.patch("os.sched_getaffinity", return_value={0, 1, 2, 3, 4}, create=True):
        two = plan_launch(2, None, url)
        six = plan_launch(6, None, url)
    assert two.cores == ((0, 1), (2, 3)) and two.threads == 2 and two.shared == (2, 2)
    assert six.cores == () and six.threads == 1 and six.shared == (6,) * 6  # too few cores
    named = plan_launch(None, "cuda:0,cuda:1,cuda:0", url)  # one worker per device named
    assert named.shared == (2, 1, 2) and named.cores == () and named.threads == 0
    # Fewer workers than devices: each owns its share (for data-parallel trials), none twice.
    split = plan_launch(2, "cuda:0,cuda:1,cuda:2,cuda:3", url)
    assert split.devices == ("cuda:0,cuda:1", "cuda:2,cuda:3") and split.shared == (1, 1)
    with pytest.raises(UserError, match="do not split evenly between 3 workers"):
        plan_launch(3, "cuda:0,cuda:1,cuda:2,cuda:3", url)
    alone = plan_launch(1, None, "sqlite:///x.db")
    assert alone.shared == () and alone.cores == ()


def test_the_device_key_says_how_many_trainings_shared_the_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from search.training.timing import fingerprint

    alone = fingerprint(torch.device("cpu"))
    monkeypatch.setenv("SEARCH_SHARED", "3")
    shared = fingerprint(torch.device("cpu"))
    assert shared["key"] == alone["key"] + " shared by 3" and shared["shared"] == 3
    assert alone["shared"] == 1 and alone["cores"]
    # Unless the user says so (search run --rank-shared): one key, the count still recorded.
    monkeypatch.setenv("SEARCH_RANK_SHARED", "1")
    pooled = fingerprint(torch.device("cpu"))
    assert pooled["key"] == alone["key"] and pooled["shared"] == 3


def test_rank_shared_reaches_the_workers_of_search_run(tmp_path: Path) -> None:
    fm.pretrained()
    path = fm.write_recipe(tmp_path, SPACE, baseline=BASELINE, probes=False)
    url = f"journal://{tmp_path / 'tiny.journal'}"
    done = fm.run("run", str(path), "--workers", "2", "--storage", url, "--trials", "2",
                  "--rank-shared", "--quiet", timeout=WAIT)
    assert done.returncode == 0, done.stderr
    trials = fm.trials_of(open_storage(url, must_exist=True), "tiny")
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 2
    for t in finished:
        assert "shared by" not in t.user_attrs["device"]
        assert t.user_attrs["result"]["device"]["shared"] == 2
