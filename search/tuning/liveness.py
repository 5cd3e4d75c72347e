"""A dead worker never hangs a study: liveness on every storage.

A worker killed mid-trial (SIGKILL, out of memory, a lost machine) leaves its trial
RUNNING. The budget counts it as taken, so the other workers would wait for it forever.

- RDB storages (SQLite, PostgreSQL) use Optuna's heartbeats: a worker beats while its
  trial runs, and ``optuna.storages.fail_stale_trials`` fails a trial whose beats stopped.
- A journal file has none in Optuna, so each worker keeps its own: it touches the file
  ``<journal>.workers/<host>:<pid>`` every heartbeat interval while it runs. A RUNNING
  trial whose worker's file is older than the grace period (or missing, once the trial
  is older than it) belongs to a dead worker.

:func:`reap` fails such trials and queues each one's params again (Optuna's bounded
retry), on either kind of storage; every worker calls it as it waits and from a thread,
and ``search run --workers`` as soon as a worker process ends badly. Two reapers may see
the same dead trial: the storage lets only one of them fail it, and only that one queues
the retry.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from search.tuning.storage import journal_liveness, retry_callback


def interval(study: optuna.Study) -> float | None:
    """Seconds between heartbeats of ``study``'s storage (None: it has none)."""
    beats = journal_liveness(study._storage)
    if beats is not None:
        return beats.interval
    get = getattr(study._storage, "get_heartbeat_interval", None)
    return get() if get else None


def _file(folder: Path, worker: str) -> Path:
    return folder / re.sub(r"[^A-Za-z0-9_.:-]", "_", worker)


class Heartbeat:
    """Touches this worker's file next to a journal every interval, from a thread, until
    stopped (and then removes it). Nothing on other storages."""

    def __init__(self, study: optuna.Study, worker: str) -> None:
        self.beats = journal_liveness(study._storage)
        self.path = _file(self.beats.folder, worker) if self.beats else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="search-beat")

    def start(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.beats.interval):
            try:
                self.path.touch()
            except OSError:  # a full or vanished disk must not kill the trial in flight
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def last_beat(study: optuna.Study, trial: FrozenTrial) -> float | None:
    """Seconds since the trial's worker last beat, on a journal; None elsewhere or when
    the worker has no file (then the trial's own age stands for it)."""
    beats = journal_liveness(study._storage)
    worker = trial.user_attrs.get("worker")
    if beats is None or not worker:
        return None
    try:
        return time.time() - _file(beats.folder, str(worker)).stat().st_mtime
    except FileNotFoundError:
        return None


def reap(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of dead workers and queue their params again; their
    numbers."""
    beats = journal_liveness(study._storage)
    if beats is None:
        optuna.storages.fail_stale_trials(study)  # RDB: Optuna's heartbeats (if any)
        return []
    dead = []
    now = time.time()
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False,
                                           states=(TrialState.RUNNING,)):
        # A trial is never staler than it is old: a retry starts with the attributes of
        # the trial it repeats, the dead worker's name among them, until its own worker
        # writes its name a moment later.
        age = now - t.datetime_start.timestamp() if t.datetime_start else 0.0
        beat = last_beat(study, t)
        silent = age if beat is None else min(beat, age)
        if silent > beats.grace and fail_and_requeue(
                study, t, f"its worker {t.user_attrs.get('worker', '?')} stopped beating "
                          f"{silent:.0f} s ago (grace {beats.grace:g} s)"):
            dead.append(t.number)
    return dead


def fail_and_requeue(study: optuna.Study, trial: Any, reason: str) -> bool:
    """Fail a RUNNING trial whose worker is gone (outcome ``lost``) and queue its params
    again, bounded; False when another reaper (or its worker) ended it first."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "outcome", "lost")
        storage.set_trial_user_attr(trial._trial_id, "reason", reason)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    retry_callback()(study, storage.get_trial(trial._trial_id))
    return True
