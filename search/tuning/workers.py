"""Several local workers: one process per device (or N CPU processes sharing the cores).

The processes are ordinary ``search worker`` commands on one study, coordinated only by
Optuna's storage (no home-made coordinator). SQLite cannot take several writing
processes, so local parallel runs use a journal file or PostgreSQL. The parent shows
the study's progress, forwards SIGTERM, and fails (and re-queues) the running trials of
a worker that died without a word (a journal storage has no heartbeats).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from search.errors import UserError
from search.tuning import liveness, queries
from search.tuning.storage import is_sqlite


@dataclass(frozen=True)
class Launch:
    """How to start the workers."""

    devices: tuple[str, ...]  # one worker per entry
    threads: int  # torch threads per worker
    # Per worker: the CPU cores it is pinned to (disjoint; empty: not pinned), and how many
    # trainings share its device (recorded with every trial: part of the device key).
    cores: tuple[tuple[int, ...], ...] = ()
    shared: tuple[int, ...] = ()


def plan_launch(workers: int | None, devices: str | None, storage: str) -> Launch:
    """Validate ``--workers`` / ``--devices`` against the storage and split the cores, or
    the devices: each worker owns its own (a data-parallel trial spreads over those of
    its worker only, so no device is booked twice)."""
    names = tuple(d.strip() for d in devices.split(",") if d.strip()) if devices else ()
    if names and workers and len(names) % workers:
        raise UserError(f"--workers {workers}: --devices names {len(names)} devices, which "
                        f"do not split evenly between {workers} workers")
    count = (workers or len(names)) if names else (workers or 1)
    if count > 1 and is_sqlite(storage):
        raise UserError(f"--workers {count}: SQLite cannot take several writing processes; "
                        f"use --storage journal:///studies/NAME.journal (a local journal "
                        f"file) or a postgresql:// URL")
    if names and count < len(names):  # each worker owns its share, for data-parallel runs
        per = len(names) // count
        return Launch(tuple(",".join(names[i * per:(i + 1) * per]) for i in range(count)),
                      0, shared=(1,) * count)
    if names:  # one worker per named device; a device named twice is shared
        return Launch(names, 0, shared=tuple(names.count(n) for n in names))
    allowed = (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else list(range(os.cpu_count() or 1)))
    per = max(1, len(allowed) // count)
    pinned = (tuple(tuple(allowed[i * per:(i + 1) * per]) for i in range(count))
              if count > 1 and len(allowed) >= count else ())
    return Launch(("cpu" if count > 1 else "auto",) * count, per, pinned,
                  (count,) * count if count > 1 else ())


def launch(study: optuna.Study, storage: str, launch_plan: Launch, *, trials: int | None,
           timeout: float | None, progress: bool) -> list[int]:
    """Start the workers, wait for them, and return their exit codes."""
    from tqdm.auto import tqdm

    procs = []
    for i, device in enumerate(launch_plan.devices):
        cmd = [sys.executable, "-m", "search", "worker", study.study_name, "--storage", storage,
               "--device", device, "--quiet"]
        env = dict(os.environ)
        if launch_plan.shared:
            env["SEARCH_SHARED"] = str(launch_plan.shared[i])
        if launch_plan.cores:
            env["SEARCH_CORES"] = ",".join(map(str, launch_plan.cores[i]))
        if launch_plan.threads:
            cmd += ["--threads", str(launch_plan.threads)]
            env["OMP_NUM_THREADS"] = str(launch_plan.threads)
        if trials is not None:
            cmd += ["--trials", str(trials)]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        procs.append(subprocess.Popen(cmd, env=env))
    previous = signal.signal(signal.SIGTERM, lambda *_: _forward(procs, signal.SIGTERM))
    bar = tqdm(total=trials, desc=f"trials ({len(procs)} workers)", unit="trial",
               disable=not progress)
    reaped: set[int] = set()
    try:
        while any(p.poll() is None for p in procs):
            _reap_dead(study, procs, reaped)
            _show(study, bar)
            time.sleep(1.0)
        _reap_dead(study, procs, reaped)
        _show(study, bar)
    except KeyboardInterrupt:
        _forward(procs, signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
    return [p.returncode for p in procs]


def _reap_dead(study: optuna.Study, procs: list[subprocess.Popen], reaped: set[int]) -> None:
    """As soon as a worker ends without a chance to record its trial (killed, out of
    memory), fail that trial and queue it again, so the others run it: no grace period
    to wait out, since this process saw the worker die."""
    for p in procs:
        if p.returncode is not None and p.pid not in reaped:
            reaped.add(p.pid)
            if p.returncode not in (0, 2, 130):
                fail_orphans(study, f"{os.uname().nodename}:{p.pid}", p.returncode)


def fail_orphans(study: optuna.Study, worker: str, code: int | None = None) -> list[int]:
    """Fail the RUNNING trials of a dead worker and re-queue their params (bounded)."""
    how = f"exit code {code}" if code is not None else "no word"
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("worker") == worker
            and liveness.fail_and_requeue(study, t, f"its worker {worker} ended ({how})")]


def _forward(procs: list[subprocess.Popen], sig: int) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)


def _show(study: optuna.Study, bar) -> None:  # noqa: ANN001 - a tqdm bar
    states = queries.states(study)
    bar.n = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
    bar.set_postfix(running=states[TrialState.RUNNING], pruned=states[TrialState.PRUNED],
                    failed=states[TrialState.FAIL])
