"""The Optuna objective: one trial is one real training run, scored as it went.

What a trial reports (also in docs/architecture.md):
- ``pareto``: ``(accuracy, seconds)``, the best validation accuracy and the training
  seconds up to the end of the epoch that first reached it. Re-training the trial's
  config (same params, same ``epochs`` schedule length) and stopping after
  ``result.best_epoch`` epochs reproduces that point.
- ``time-to-accuracy``: ``seconds``, the training seconds until validation accuracy first
  reached the target (training stops there). A trial that never reaches it is pruned with
  outcome ``unreached``.

Each epoch the curve is written to the trial (``user_attrs["curve"]``), then the pruner
decides: our Pareto successive halving for ``pareto``, Optuna's own pruner (through
``trial.report`` of the validation error) for ``time-to-accuracy``. Diverged and
out-of-memory trials complete as infeasible (``trial.set_constraint``) so samplers learn
to avoid them and the front ignores them. Any other exception from training fails the
trial with outcome ``error`` and the search goes on.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from search.config import TrainConfig
from search.engine import TrainResult, train
from search.errors import UserError
from search.pruning import ParetoSuccessiveHalving
from search.space import Space

INFEASIBLE = ("diverged", "oom")


class TrialError(Exception):
    """Training raised: the trial fails with outcome ``error`` (its traceback stored in the
    ``traceback`` user attribute) and the study goes on; the worker's failure guard stops
    after several in a row."""


@dataclass
class Objective:
    """Callable for ``study.optimize``: samples a config, trains it, reports the result."""

    space: Space
    base: TrainConfig
    data: Any  # search.data.Data, loaded once per worker
    model: Any  # search.models.ModelSpec
    device: Any
    objective: str = "pareto"
    target: float | None = None
    pruner: ParetoSuccessiveHalving | None = None
    budget: int | None = None  # finished trials the study should hold, across workers
    worker: str = ""
    on_epoch: Callable[[optuna.trial.Trial, TrainConfig, int, float, float], None] | None = None

    def __post_init__(self) -> None:
        from search.timing import fingerprint

        self.device_key = fingerprint(self.device)["key"]

    def __call__(self, trial: optuna.trial.Trial) -> Any:
        self._check_budget(trial)
        try:
            config = self.space.suggest(trial, self.base)
        except UserError as e:  # a sampled combination the config refuses: record, go on
            trial.set_user_attr("outcome", "invalid")
            trial.set_user_attr("reason", str(e))
            raise
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("device", self.device_key)  # the pruner compares within a device
        trial.set_user_attr("worker", self.worker)
        curve: list[dict[str, float]] = []
        trial.set_user_attr("curve", curve)  # a retried trial inherits the old one: reset

        def callback(epoch: int, acc: float, loss: float, seconds: float) -> str | None:
            curve.append({"epoch": epoch, "seconds": seconds, "accuracy": acc, "loss": loss})
            trial.set_user_attr("curve", curve)
            if self.on_epoch:
                self.on_epoch(trial, config, epoch, acc, seconds)
            if self.objective == "time-to-accuracy":
                if acc >= self.target:
                    return f"reached target {self.target} at epoch {epoch}"
                trial.report(1.0 - acc, step=epoch)
                if trial.should_prune():
                    return f"pruned by {type(trial.study.pruner).__name__} at epoch {epoch}"
                return None
            if self.pruner is not None and epoch < config.epochs:  # the last saves nothing
                return self.pruner.prune(trial.study, trial.number, curve)
            return None

        try:
            result = train(config, self.data, self.model, device=self.device,
                           callback=callback)
        except KeyboardInterrupt as e:  # SIGINT, or SIGTERM turned into one by the worker
            trial.set_user_attr("outcome", "interrupted")
            trial.set_user_attr("reason", f"interrupted by {str(e) or 'SIGINT'} after "
                                          f"{len(curve)} epochs")
            raise
        except Exception as e:  # a bug in training or in a user's model: record, go on
            trial.set_user_attr("outcome", "error")
            trial.set_user_attr("reason", f"{type(e).__name__}: {e}")
            trial.set_user_attr("traceback", traceback.format_exc())
            raise TrialError(f"trial {trial.number}: {type(e).__name__}: {e}") from e
        return self._report(trial, result)

    def _check_budget(self, trial: optuna.trial.Trial) -> None:
        """Trials are numbered atomically by the storage; if the budget's slots are all
        taken by lower-numbered trials (finished or running), this one is surplus: two
        workers asked at once for the last slot. It fails at once (the worker's budget gate
        then waits for a free slot or the end)."""
        if self.budget is None:
            return
        from search.loop import OverBudget
        from search.study import FINISHED

        states = (*FINISHED, optuna.trial.TrialState.RUNNING)
        ahead = sum(1 for t in trial.study.get_trials(deepcopy=False, states=states)
                    if t.number < trial.number)
        if ahead >= self.budget:
            trial.set_user_attr("outcome", "surplus")
            trial.set_user_attr("reason", f"the budget of {self.budget} trials was taken by "
                                          f"other workers first")
            raise OverBudget(trial.number)

    def _report(self, trial: optuna.trial.Trial, result: TrainResult) -> Any:
        outcome, reason = result.outcome, result.reason
        reached = self.objective == "time-to-accuracy" and reason.startswith("reached target")
        if reached:
            outcome = "completed"
        elif self.objective == "time-to-accuracy" and outcome not in ("pruned", *INFEASIBLE):
            outcome = "unreached"
            reason = (f"best accuracy {result.accuracy:.4f} < target {self.target} "
                      f"after {result.epochs_run} epochs")
        trial.set_user_attr("result", result.to_dict())
        trial.set_user_attr("outcome", outcome)
        trial.set_user_attr("reason", reason)
        trial.set_constraint("feasible", 1.0 if outcome in INFEASIBLE else 0.0)
        if outcome in ("pruned", "unreached"):
            raise optuna.TrialPruned(reason)
        if self.objective == "time-to-accuracy":
            if outcome in INFEASIBLE:
                raise optuna.TrialPruned(reason)
            return result.seconds
        return result.accuracy, result.seconds
