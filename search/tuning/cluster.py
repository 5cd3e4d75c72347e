"""Workers on a Ray cluster: ``search run STUDY.yaml --ray ADDRESS``.

The study is made (or resumed) here, in the storage every node reaches (PostgreSQL, or a
journal file on a shared file system); Ray then places one worker per GPU, or one per
``cores`` CPU cores where the cluster has no GPU. Each worker is the same loop as
``search worker`` (``search/tuning/loop.py``): it joins the study through the storage and
runs trials until the budget is met; Optuna's storage alone coordinates them, so a
worker Ray places is no different from one started by hand, by SLURM or by Kubernetes
(``deploy/``).

A worker that dies (its node lost, killed, out of memory) ends its Ray task with an
error: its trial is failed and queued again by the others within the heartbeat grace
(``search/tuning/liveness.py``), and this driver starts a replacement, until the study
holds its budget (at most ``restarts`` replacements, so a worker that dies every time
cannot loop forever).

``ADDRESS`` is a Ray address (``ray://host:10001``, ``host:6379``), ``auto`` (the cluster
this machine belongs to), or ``local`` (start a Ray instance on this machine: how the
tests run it, on the CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import optuna

from search.errors import UserError
from search.tuning import liveness, queries
from search.tuning.storage import is_sqlite

# Settings a worker needs from this process's environment (the tests' short heartbeats).
_PASSED = ("SEARCH_HEARTBEAT_SECONDS", "SEARCH_GRACE_SECONDS", "SEARCH_MAX_WAIT_SECONDS",
           "SEARCH_RANK_SHARED",
           "SEARCH_CACHE", "TORCH_HOME")


@dataclass(frozen=True)
class Placement:
    """What Ray gives each worker, and how many run at once."""

    workers: int
    gpus: int  # per worker: 1 on a GPU cluster, else 0
    cpus: int  # per worker


def _worker(name: str, storage: str, device: str, threads: int, trials: int | None,
            timeout: float | None, cwd: str) -> int:
    """One worker on a Ray node: the loop of ``search worker``; the trials it finished.
    It works in the driver's directory where the node has it (relative paths in a recipe
    mean the same there), else in Ray's."""
    from search.tuning import loop
    from search.tuning import study as studies

    if os.path.isdir(cwd):
        os.chdir(cwd)
    opened, plan = studies.attach(name, storage)
    return loop.work(opened, plan, trials=trials, timeout=timeout, device=device,
                     progress=False, threads=threads).ran


def connect(address: str) -> Any:
    """``ray.init`` for ``address`` (``local`` starts a Ray instance here)."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray: Ray is not installed (pip install 'search[ray]')") from None
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True,
                 runtime_env={"env_vars": {k: os.environ[k] for k in _PASSED
                                           if k in os.environ}})
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--ray: cannot connect to {address!r}: {first[:200]}") from None
    return ray


def place(resources: dict[str, float], *, cores: int, workers: int | None) -> Placement:
    """One worker per GPU, else one per ``cores`` CPUs, at most ``workers``."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus:
        count, placement = gpus, Placement(0, 1, 1)
    else:
        count, placement = cpus // cores, Placement(0, 0, cores)
    if count < 1:
        raise UserError(f"--ray: the cluster has {cpus} CPUs and no GPU, fewer than "
                        f"--ray-cores {cores}")
    return Placement(min(count, workers) if workers else count, placement.gpus,
                     placement.cpus)


def run(study: optuna.Study, storage: str, address: str, *, cores: int = 1,
        workers: int | None = None, trials: int | None = None, timeout: float | None = None,
        restarts: int | None = None, note: Any = print) -> int:
    """Place workers for ``study`` on the Ray cluster at ``address`` and replace those
    that die until the study holds its budget; the number of workers that died."""
    if is_sqlite(storage):
        raise UserError("--ray: workers on a cluster share the study through its storage; "
                        "SQLite serves one process: use a postgresql:// URL (or a journal "
                        "file on a shared file system)")
    ray = connect(address)
    placement = place(ray.cluster_resources(), cores=cores, workers=workers)
    budget = trials or (study.user_attrs.get("budget") or {}).get("trials")
    restarts = 2 * placement.workers if restarts is None else restarts
    remote = ray.remote(num_gpus=placement.gpus, num_cpus=placement.cpus,
                        max_retries=0)(_worker)
    device = "cuda" if placement.gpus else "cpu"

    def start() -> Any:
        return remote.remote(study.study_name, storage, device, placement.cpus, trials,
                             timeout, os.getcwd())

    note(f"ray: {placement.workers} workers ({placement.gpus or placement.cpus} "
         f"{'GPU' if placement.gpus else 'CPU cores'} each) on {address}")
    running, died = [start() for _ in range(placement.workers)], 0
    try:
        while running:
            done, running = ray.wait(running, num_returns=1, timeout=5.0)
            liveness.reap(study)  # a dead worker's trial, without waiting for the others
            for ref in done:
                try:
                    ray.get(ref)
                    continue
                except Exception as e:  # noqa: BLE001 - a worker died: say so, replace it
                    died += 1
                    note(f"ray: a worker ended with {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}")
                finished = queries.count(study, (optuna.trial.TrialState.COMPLETE,
                                                 optuna.trial.TrialState.PRUNED))
                if budget is not None and finished >= budget:
                    continue
                if died > restarts:
                    raise UserError(f"--ray: {died} workers died (more than {restarts}); "
                                    f"the study holds {finished} of {budget} trials")
                running.append(start())
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        ray.shutdown()
    return died
