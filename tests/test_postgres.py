"""Optuna's RDB storage on a real PostgreSQL server (the fixtures live in tests/postgres.py)."""

from __future__ import annotations

import time

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from tests.postgres import PostgresServer, _unavailable

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_each_test_gets_a_fresh_database(postgres_server: PostgresServer, postgres_url: str):
    other = postgres_server.create_database()
    assert other != postgres_url
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        assert engine.dialect.driver == "psycopg"
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_multi_objective_study_is_shared_between_handles(postgres_url: str):
    optuna.create_study(
        storage=RDBStorage(postgres_url),
        study_name="pareto",
        directions=["maximize", "minimize"],
    )
    # Two handles with their own engines, as two workers would have.
    first = optuna.load_study(study_name="pareto", storage=RDBStorage(postgres_url))
    second = optuna.load_study(study_name="pareto", storage=RDBStorage(postgres_url))
    assert second.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]

    # x <= 1, so both of these trials are dominated by the one `second` adds below.
    first.optimize(lambda t: (0.4 * t.suggest_float("x", 0, 1), 2.0), n_trials=2)
    trial = second.ask()
    trial.suggest_float("x", 0, 1)
    second.tell(trial, [0.5, 1.0])

    for study in (first, second):
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
        assert all("x" in t.params for t in trials)
        assert trials[2].values == [0.5, 1.0]
    assert [t.number for t in first.best_trials] == [2]


# Heartbeats are experimental in Optuna, and meant for Study.optimize rather than ask().
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_fail_stale_trials_fails_a_trial_whose_heartbeat_stopped(postgres_url: str):
    grace_period = 2
    worker = RDBStorage(postgres_url, heartbeat_interval=1, grace_period=grace_period)
    study = optuna.create_study(storage=worker, study_name="heartbeat")
    crashed, alive = study.ask(), study.ask()

    # What the heartbeat thread of a worker does; the "crashed" one then stops beating.
    worker.record_heartbeat(crashed._trial_id)
    time.sleep(grace_period + 0.5)
    worker.record_heartbeat(alive._trial_id)

    watcher = RDBStorage(postgres_url, heartbeat_interval=1, grace_period=grace_period)
    optuna.storages.fail_stale_trials(optuna.load_study(study_name="heartbeat", storage=watcher))

    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {crashed.number: TrialState.FAIL, alive.number: TrialState.RUNNING}


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("true", pytest.fail.Exception), ("", pytest.skip.Exception)],
)
def test_missing_server_fails_only_in_ci(monkeypatch, ci: str, outcome: type[BaseException]):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="not found"):
        _unavailable("PostgreSQL server binaries not found")
