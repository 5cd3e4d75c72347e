"""Two peers' multi-objective pruners, adapted to decide inside our objective.

``benchmarks/efficiency.py`` runs them against our Pareto successive halving. Each adapter
has our pruner's interface, ``prune(study, trial_number, curve) -> str | None``: called
after every epoch with the trial's curve so far (``{"epoch", "seconds", "accuracy",
"loss"}`` per epoch); a returned string is the reason to stop the trial now. Optuna's
sampler still picks every config: the peers only decide when to stop. Both see what
ours sees: the best accuracy so far (maximized) and the cumulative training seconds
(minimized) at the end of each epoch.

The peers are benchmark-only dependencies, imported here and nowhere in ``search``; a
missing one raises :class:`Unavailable`, and the benchmark skips its arm with the reason.
We use them as a user would, with their default settings, and do not patch them. What we
found reading their source (also in ``docs/benchmarks.md``):

- Syne Tune 0.16.0, ``MOASHA``: its default ``NonDominatedPriority`` returns an *order*
  (row indices, best first; ``nondominated_sort``) where ASHA's ``Bracket.on_result``
  expects one priority *per row*. The bracket takes ``ranks[-1]``, meant as the new
  trial's rank, but gets the index of the row that comes last in the order (one of the
  worst front) over n: a new trial is stopped when it is that row, or else when that row
  is an earlier trial that happened to reach the rung late (index / n > 1 / eta),
  whatever the new trial's own rank. Within a front, ``compute_epsilon_net`` returns
  ranks that ``nondominated_sort`` then uses as an order: the same mix-up once more.
- OptunaHub ``pruners/multi_metric_pruner`` (joint mode): it ranks every trial's reported
  metrics per step by Pareto rank (front 0 is never pruned, ties broken by hypervolume
  contribution) and hands the ranks to a base pruner through a synthetic in-memory study.
  Over Optuna's ``SuccessiveHalvingPruner`` that raises ``KeyError: 'No trial with
  trial_id -1 exists.'``: the synthetic trial comes from ``optuna.trial.create_trial``
  (id -1) and that pruner writes its rung as a system attribute into the storage. So the
  arm uses ``MedianPruner(n_startup_trials=3)``, as the package's own example does.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna

from search.tuning.pruning import Pruner

HUB_PACKAGE = "pruners/multi_metric_pruner"
HUB_ENV = "OPTUNAHUB_REGISTRY"


class Unavailable(Exception):
    """A peer's library or files are missing: its arm is skipped with this reason."""


def best_so_far(curve: list[dict[str, Any]]) -> float:
    return max(entry["accuracy"] for entry in curve)


class MOASHAPruner(Pruner):
    """Syne Tune's MOASHA deciding on our trials (its default priority, one bracket).

    MOASHA is a scheduler: it is told a trial exists (``on_trial_add``) and is given each
    result (``on_trial_result``), and answers continue or stop. Syne Tune minimizes every
    metric of MOASHA together, so accuracy goes in as the error ``1 - accuracy``. Its
    progress measure (``time_attr``) is the curve entry ``resource``: ``epoch``, or
    ``fraction`` (of the trial's own schedule) as our recipe's ``resource: fraction``.

    ASHA's bracket records a trial at the highest rung it has passed but is not recorded
    at yet; so a trial that passed two rungs in one epoch (a short schedule, on fractions)
    is recorded at the skipped lower rung at its next epoch and judged there once more,
    with its later metrics. That is the peer's rule, left as it is.
    """

    def __init__(self, *, eta: int, min_resource: float, max_resource: float, resource: str,
                 seed: int) -> None:
        try:
            from syne_tune.backend.trial_status import Trial
            from syne_tune.optimizer.scheduler import SchedulerDecision
            from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
        except ImportError as e:
            raise Unavailable(
                f"syne-tune is not installed ({e}; setup in docs/benchmarks.md)") from None
        self._trial_type, self._stop = Trial, SchedulerDecision.STOP
        # Rungs at grace_period * reduction_factor**k up to max_t: epochs 1, 3, 9 for
        # (1, 3, 10); fractions 1/9, 1/3 (and 1, never reported: the last epoch is not
        # judged) for (1/9, 3, 1).
        self.scheduler = MOASHA(config_space={}, metrics=["error", "seconds"],
                                do_minimize=True, time_attr=resource, max_t=max_resource,
                                grace_period=min_resource, reduction_factor=eta,
                                random_seed=seed)
        self.resource = resource
        self._trials: dict[int, Any] = {}

    def prune(self, study: optuna.Study, running: Any, curve: list[dict[str, Any]]
              ) -> str | None:
        trial = self._trials.get(running.number)
        if trial is None:
            trial = self._trial_type(trial_id=running.number, config={},
                                     creation_time=dt.datetime.now())
            self._trials[running.number] = trial
            self.scheduler.on_trial_add(trial)
        epoch = curve[-1]["epoch"]
        result = {self.resource: curve[-1][self.resource], "error": 1.0 - best_so_far(curve),
                  "seconds": curve[-1]["seconds"]}
        if self.scheduler.on_trial_result(trial, result) == self._stop:
            return f"stopped by MOASHA at epoch {epoch}"
        return None


def load_hub(registry: str | os.PathLike | None) -> ModuleType:
    """OptunaHub's multi_metric_pruner from a local checkout of optuna/optunahub-registry
    (its root, or its ``package`` folder); ``None`` reads ``$OPTUNAHUB_REGISTRY``."""
    registry = registry or os.environ.get(HUB_ENV)
    if not registry:
        raise Unavailable(f"no local OptunaHub registry: pass --optunahub-registry DIR or "
                          f"set {HUB_ENV} (setup in docs/benchmarks.md)")
    try:
        import optunahub
    except ImportError as e:
        raise Unavailable(
            f"optunahub is not installed ({e}; setup in docs/benchmarks.md)") from None
    root = Path(registry)
    if (root / "package").is_dir():
        root = root / "package"
    if not (root / HUB_PACKAGE / "__init__.py").is_file():
        raise Unavailable(f"no {HUB_PACKAGE} in the OptunaHub registry at {registry}")
    return optunahub.load_local_module(package=HUB_PACKAGE, registry_root=str(root))


class HubMedianPruner(Pruner):
    """OptunaHub's ``MultiMetricPruner`` (joint mode) over ``MedianPruner``, used the way
    its example uses it: the study holds it as its pruner (``study_pruner``), each epoch is
    reported through ``MultiMetricPrunerTrial.report`` and decided by ``should_prune``.

    The running ``optuna.Trial`` our objective passes is wrapped once per trial.
    """

    def __init__(self, module: ModuleType) -> None:
        self._wrap = module.MultiMetricPrunerTrial
        self.study_pruner = module.MultiMetricPruner(
            optuna.pruners.MedianPruner(n_startup_trials=3),
            metric_directions={"accuracy": "maximize", "seconds": "minimize"}, joint=True)
        self._trial: tuple[int, Any] | None = None

    def prune(self, study: optuna.Study, running: Any, curve: list[dict[str, Any]]
              ) -> str | None:
        if self._trial is None or self._trial[0] != running.number:
            self._trial = running.number, self._wrap(running)
        trial, epoch = self._trial[1], curve[-1]["epoch"]
        trial.report({"accuracy": best_so_far(curve), "seconds": curve[-1]["seconds"]},
                     step=epoch)
        if trial.should_prune():
            return f"pruned by MultiMetricPruner(MedianPruner) at epoch {epoch}"
        return None


def versions(registry: str | os.PathLike | None) -> dict[str, str | None]:
    """The peers' versions for the JSON record: the packages, and the registry's commit
    when it is a git checkout."""
    out: dict[str, str | None] = {}
    for name in ("syne-tune", "optunahub"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    registry = registry or os.environ.get(HUB_ENV)
    commit = None
    if registry:
        done = subprocess.run(["git", "-C", str(registry), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=False)
        commit = done.stdout.strip() if done.returncode == 0 else None
    out["optunahub-registry"] = commit
    return out
