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
decides: our Pareto successive halving for ``pareto``, Optuna's own pruner for
``time-to-accuracy``, on the time axis (see ``time_steps``).

Every measured point counts: a ``pareto`` trial the pruner stopped COMPLETES with the
point it reached (its best accuracy and the seconds at the epoch that first reached it,
outcome ``pruned``): training its config with the same schedule length and stopping after
that epoch reproduces it, so it enters the front, the hypervolume, the choices and what
the samplers learn from, like any other. Diverged and out-of-memory trials complete as
infeasible (constraint ``feasible``), and so do points below the accuracy floor
(constraint ``floor``, ``search/tuning/floor.py``), so samplers learn to avoid them and
``study.best_trials`` leaves them out. Any other exception from training fails the trial
with outcome ``error`` and the search goes on.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from search.errors import UserError
from search.metric import ACCURACY
from search.outcomes import FINISHED, INFEASIBLE
from search.training.config import TrainConfig
from search.training.engine import TrainResult, train
from search.training.run import run_trainer
from search.training.timing import fingerprint
from search.tuning import queries
from search.tuning.floor import BASELINE_ATTR, Floor, baseline_accuracy, find_baseline
from search.tuning.pruning import Pruner
from search.tuning.space import Space

# Time-to-accuracy reports to Optuna's pruners at training times on this grid, in
# milliseconds: 10 ms * sqrt(2)**k. Optuna compares trials at equal steps, and the
# objective is seconds, so steps are time, not epochs: a config with cheap epochs is
# judged against the others at the same training seconds, not at the same epoch count.
_GRID_START_MS, _GRID_RATIO = 10.0, math.sqrt(2.0)


def time_steps(before: float, now: float) -> list[int]:
    """The grid steps (integer milliseconds) in ``(before, now]`` seconds.

    An epoch that ended at ``now`` reports its accuracy at every grid time since the
    previous epoch ended: the value is "reached by the end of the epoch running at that
    time", the same rounding for every trial. About 2 steps per doubling of time.
    """
    steps, k = [], 0
    while True:
        ms = _GRID_START_MS * _GRID_RATIO**k
        if ms > now * 1000.0:
            return steps
        if ms > before * 1000.0:
            steps.append(round(ms))
        k += 1


class OverBudget(Exception):
    """Another worker took the last slot of the budget first."""


class TrialError(Exception):
    """Training raised: the trial fails with outcome ``error`` (its traceback stored in the
    ``traceback`` user attribute) and the study goes on; the worker's failure guard stops
    after several in a row."""


def judged(config: TrainConfig, epoch: int) -> bool:
    """Whether the pruner judges a trial after ``epoch``: never after the last (stopping
    then saves nothing), and not on the epochs that hold one-time costs
    (``config.warm_epochs``: a compiled model's first epoch holds its whole compile cost;
    a user pays it, so it stays in the seconds, but it says nothing yet about how fast
    the compiled model trains). Its first decision is at the next rung."""
    return config.warm_epochs < epoch < config.train_epochs


@dataclass
class Objective:
    """Callable for ``study.optimize``: samples a config, trains it, reports the result."""

    space: Space
    base: TrainConfig
    data: Any  # search.training.data.Data, loaded once per worker
    model: Any  # search.training.models.ModelSpec
    device: Any
    objective: str = "pareto"
    target: float | None = None
    pruner: Pruner | None = None  # ours (ParetoSuccessiveHalving), or a peer's
    floor: Floor | None = None
    budget: int | None = None  # finished trials the study should hold, across workers
    worker: str = ""
    on_epoch: Callable[[optuna.trial.Trial, TrainConfig, int, float, float], None] | None = None
    context: Any = None  # search.training.trick.Context: what a sampled config must fit
    trainer: Any = None  # a user's trainer (search/training/run.py); None: the engine
    metric: Any = ACCURACY  # search.metric.Metric: what the trainer reports
    devices: Any = None  # the worker's devices a data-parallel run may use (None: default)

    def __post_init__(self) -> None:
        self.device_key = fingerprint(self.device)["key"]  # a one-process run's
        self._baseline_accuracy: float | None = None  # known once the baseline completed

    def __call__(self, trial: optuna.trial.Trial) -> Any:
        trial.set_user_attr("worker", self.worker)  # first: a surplus trial names its worker
        self._check_budget(trial)
        try:
            config = self.space.suggest(trial, self.base)
            if self.context is not None:
                config.check(self.context)
        except UserError as e:  # a sampled combination the config refuses: record, go on
            trial.set_user_attr("outcome", "invalid")
            trial.set_user_attr("reason", str(e))
            raise
        trial.set_user_attr("config", config.to_dict())
        # The pruner compares within a device key (a data-parallel run's names its processes).
        device_key = self.device_key if config.data_parallel == 1 else \
            fingerprint(self.device, config.data_parallel)["key"]
        trial.set_user_attr("device", device_key)
        curve: list[dict[str, float]] = []
        trial.set_user_attr("curve", curve)  # a retried trial inherits the old one: reset
        baseline = bool(trial.user_attrs.get(BASELINE_ATTR))
        if self.pruner is not None:
            self.pruner.forget(trial.study, trial)  # a retried trial inherits the old records

        def callback(epoch: float, acc: float, loss: float, seconds: float) -> str | None:
            curve.append({"epoch": epoch, "seconds": seconds, "accuracy": acc, "loss": loss,
                          "fraction": epoch / config.epochs})
            trial.set_user_attr("curve", curve)
            if self.on_epoch:
                self.on_epoch(trial, config, epoch, acc, seconds)
            if self.objective == "time-to-accuracy":
                if acc >= self.target:
                    return f"reached target {self.target} at epoch {epoch}"
                before = curve[-2]["seconds"] if len(curve) > 1 else 0.0
                error = 1.0 - max(e["accuracy"] for e in curve)
                steps = time_steps(before, seconds)
                for step in steps:
                    trial.report(error, step=step)
                if steps and trial.should_prune():
                    return (f"pruned by {type(trial.study.pruner).__name__} at epoch {epoch} "
                            f"({seconds:.2f} s)")
                return None
            if self.pruner is None:
                return None
            self.pruner.record(trial.study, trial, curve, device=device_key,
                               baseline=baseline)
            return self.pruner.prune(trial.study, trial, curve) if judged(config, epoch) else None

        try:
            if self.trainer is None:
                result = train(config, self.data, self.model, device=self.device,
                               devices=self.devices,
                               callback=callback)
            else:
                result = run_trainer(self.trainer, config, device=self.device,
                                     params=self.space.extras(trial), decide=callback,
                                     metric=self.metric)
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
        ahead = queries.count(trial.study, (*FINISHED, optuna.trial.TrialState.RUNNING),
                              below=trial.number)
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
        if self.objective == "time-to-accuracy":
            if outcome in ("pruned", "unreached", *INFEASIBLE):
                raise optuna.TrialPruned(reason)
            return result.seconds
        floor = self._floor(trial, result)
        if floor is not None:
            # > 0 is infeasible; stored once, when the trial ends (Optuna's constraints are
            # write-once). Trials that end before the baseline did get none.
            trial.set_constraint("floor", floor - result.accuracy)
        return result.accuracy, result.seconds  # a pruned trial's point counts too

    def _floor(self, trial: optuna.trial.Trial, result: TrainResult) -> float | None:
        """The study's absolute accuracy floor, once the baseline's accuracy is known."""
        if self.floor is None or self.floor.off:
            return None
        if trial.user_attrs.get(BASELINE_ATTR) and result.outcome not in INFEASIBLE:
            self._baseline_accuracy = result.accuracy
        if self._baseline_accuracy is None and self.floor.below_baseline is not None:
            self._baseline_accuracy = baseline_accuracy(find_baseline(trial.study))
        return self.floor.resolve(self._baseline_accuracy)
