"""The worker loop: run a study's trials in this process until its budget is spent.

Every ``search run`` and ``search worker`` process runs :func:`work`. Around Optuna's
``study.optimize`` it keeps the budget exact across workers (:class:`BudgetGate`, and the
objective's surplus check), stops after several failures in a row (:class:`FailureGuard`),
fails the trials of dead workers within the heartbeat grace (:class:`_Reaper`), and turns
SIGINT/SIGTERM into an ``interrupted`` trial that is queued again.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from search.errors import Interrupted, UserError
from search.outcomes import FINISHED
from search.tuning import liveness, queries
from search.tuning.recipe import Recipe
from search.tuning.storage import env_seconds, retry_callback
from search.tuning.study import Plan, open_study, plan_for


def finished_count(study: optuna.Study) -> int:
    return queries.count(study, FINISHED)


@dataclass
class RunSummary:
    study: optuna.Study
    ran: int
    seconds: float


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def work(study: optuna.Study, plan: Plan, *, trials: int | None = None,
         timeout: float | None = None, device: str = "auto", progress: bool = True,
         threads: int | None = None) -> RunSummary:
    """Run trials of ``study`` in this process until the study holds ``trials`` finished
    trials (default: the stored budget) or ``timeout`` seconds pass.

    SIGINT and SIGTERM end the trial in flight as failed (outcome ``interrupted``) and
    re-queue its params; a background thread fails trials of dead workers whose
    heartbeat stopped (``search/tuning/liveness.py``), re-queueing their params too.
    """
    import torch

    from search.training.data import load as load_data
    from search.training.engine import default_devices
    from search.training.timing import resolve_device
    from search.tuning.objective import Objective, OverBudget, TrialError
    from search.tuning.progress import Progress

    # Our bars and one-line messages replace Optuna's log lines (and its tracebacks of
    # trials we fail on purpose: interrupted, surplus).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if os.environ.get("SEARCH_CORES") and hasattr(os, "sched_setaffinity"):
        # Pinned by `search run --workers`: disjoint cores per worker where the OS allows.
        os.sched_setaffinity(0, {int(c) for c in os.environ["SEARCH_CORES"].split(",")})
    if threads:
        torch.set_num_threads(threads)
    budget = study.user_attrs.get("budget") or {}
    trials = trials if trials is not None else budget.get("trials")
    timeout = timeout if timeout is not None else budget.get("timeout")
    # `--device cuda:0,cuda:1`: this worker owns both; a data-parallel trial spreads over
    # as many as it asks for, and no other worker of the host is given them.
    owned = [resolve_device(d.strip()) for d in device.split(",")] if "," in device else None
    dev = owned[0] if owned else resolve_device(device)
    devices = default_devices(dev) if owned is None else owned
    data = load_data(plan.data) if plan.trainer is None else None
    bar = Progress(total=trials, enabled=progress)
    bar.study_bar.update(min(finished_count(study), trials or 0))
    objective = Objective(space=plan.space, base=plan.base, data=data, model=plan.model,
                          device=dev, objective=plan.objective,
                          target=plan.target_score, pruner=plan.pruner(),
                          floor=plan.floor, budget=trials,
                          worker=worker_id(), on_epoch=bar.on_epoch,
                          context=plan.context and dataclasses.replace(
                              plan.context, devices=len(devices)),
                          devices=devices,
                          trainer=plan.trainer, metric=plan.metric)
    reaper, beat = _Reaper(study), liveness.Heartbeat(study, objective.worker)
    previous = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _interrupt)
    start, before = time.perf_counter(), _finished_by(study, objective.worker)
    try:
        beat.start()
        liveness.reap(study)  # zombies of earlier runs
        reaper.start()
        gate = BudgetGate(trials, note=bar.note)
        gate(study, None)
        if not gate.done:
            study.optimize(objective, timeout=timeout,
                           callbacks=[bar.on_trial, FailureGuard(), gate],
                           catch=(OverBudget, UserError, TrialError))
    except KeyboardInterrupt as e:
        _requeue_interrupted(study, objective.worker)
        raise Interrupted(f"interrupted ({str(e) or 'SIGINT'}): the trial in flight is recorded "
                          f"as failed and re-queued; run again to continue") from None
    finally:
        reaper.stop()
        beat.stop()
        bar.close()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return RunSummary(study, _finished_by(study, objective.worker) - before,
                      time.perf_counter() - start)


def _finished_by(study: optuna.Study, worker: str) -> int:
    return queries.count_by(study, FINISHED, "worker", worker)


# Held while stale trials are failed and re-queued in this process (reaper and gate).
_REAPING = threading.Lock()


class BudgetGate:
    """Before each new trial: stop once the study holds ``trials`` finished trials; while
    running trials fill the remaining slots, wait (a dead worker's trial is failed and
    re-queued by :func:`liveness.reap`, and this worker runs the retry), then go on.

    The wait is bounded: after ``max_wait`` seconds (``$SEARCH_MAX_WAIT_SECONDS``, default
    an hour) this worker stops, saying which trials held the slots and whose they were;
    meanwhile it says so every ``report`` seconds through ``note``."""

    def __init__(self, trials: int | None, *, poll: float = 1.0, max_wait: float | None = None,
                 report: float = 60.0, note: Callable[[str], None] | None = None) -> None:
        self.trials = trials
        self.poll = poll
        self.max_wait = max_wait if max_wait is not None else env_seconds(
            "SEARCH_MAX_WAIT_SECONDS", 3600)
        self.report = report
        self.note = note or (lambda _line: None)
        self.done = False
        self.gave_up: str | None = None

    def __call__(self, study: optuna.Study, _trial: Any) -> None:
        if self.trials is None:
            return
        start = last_note = time.monotonic()
        while True:
            # Fail (and re-queue) dead workers' trials first, so a slot they held counts
            # as free and its retry as waiting. Under the lock the reaper thread also
            # takes: between its FAIL and its re-queue the gate would see a free slot and
            # no retry, start a fresh trial and leave the retry waiting past the budget.
            with _REAPING:
                liveness.reap(study)
                states = queries.states(study)
            finished = sum(states[s] for s in FINISHED)
            waited = time.monotonic() - start
            if finished >= self.trials or waited > self.max_wait:
                self.done = True
                if finished < self.trials:
                    self.gave_up = (f"stopped waiting after {waited:.0f} s for "
                                    f"{_holders(study)}: they hold the budget's last slots; "
                                    f"run `search worker` again to take over if one dies")
                    self.note(self.gave_up)
                if _trial is not None:  # inside optimize (a callback); before it, no need
                    study.stop()
                return
            if finished + states[TrialState.RUNNING] < self.trials or states[TrialState.WAITING]:
                return
            if time.monotonic() - last_note >= self.report:
                self.note(f"waiting {waited:.0f} s for {_holders(study)} (the budget's last "
                          f"slots; a dead worker's trial is failed and re-queued within its "
                          f"grace period)")
                last_note = time.monotonic()
            time.sleep(self.poll)


def _holders(study: optuna.Study) -> str:
    """The running trials, with their workers and how long since each last beat."""
    out = []
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False,
                                           states=(TrialState.RUNNING,)):
        silent = liveness.last_beat(study, t)
        beat = "" if silent is None else f", beat {silent:.0f} s ago"
        out.append(f"trial {t.number} ({t.user_attrs.get('worker', '?')}{beat})")
    return ", ".join(out) or "no running trial"


class FailureGuard:
    """Stops a worker whose trials keep failing (an invalid sampled config, a broken
    model): failed trials do not count towards the budget, so it would loop forever."""

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit
        self.streak = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        outcome = trial.user_attrs.get("outcome")
        if trial.state != TrialState.FAIL or outcome in ("surplus", "interrupted"):
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self.limit:
            reason = trial.user_attrs.get("reason") or "see the study's failed trials"
            raise UserError(f"{self.limit} trials in a row failed; the last: {reason}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _requeue_interrupted(study: optuna.Study, worker: str) -> None:
    """Queue the params of this worker's interrupted trials again (once each)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    retry = retry_callback()
    for t in trials:
        if (t.state == TrialState.FAIL and t.number not in retried
                and t.user_attrs.get("worker") == worker
                and t.user_attrs.get("outcome") == "interrupted"):
            retry(study, t)


class _Reaper:
    """Fails trials whose worker stopped beating, every heartbeat interval, so a dead
    worker's trial is failed and retried within the grace period even while no worker
    starts a new trial (Optuna itself checks only then)."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.interval = liveness.interval(study)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="search-reaper")

    def start(self) -> None:
        if self.interval:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with _REAPING:
                    liveness.reap(self.study)
            except Exception:  # noqa: BLE001 - a storage hiccup must not kill the worker
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def optimize_recipe(recipe: Recipe, *, trials: int | None = None, timeout: float | None = None,
                    storage: str | None = None, device: str = "auto", seed: int | None = None,
                    sampler: str | None = None, progress: bool = True) -> RunSummary:
    """Run (or resume) the study of ``recipe`` in this process: the library behind
    ``search run``."""
    plan = plan_for(recipe)
    study = open_study(recipe, plan, storage=storage, sampler=sampler, seed=seed,
                       trials=trials, timeout=timeout)
    return work(study, plan, trials=trials, timeout=timeout, device=device, progress=progress)

