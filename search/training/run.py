"""A run: what a trial gives a training loop, the built-in engine's or a user's own.

A trainer is a function ``train(run)``. The run gives it the sampled config
(``run.config``, with every building block: ``prepare``, ``build_optimizer``,
``build_scheduler``, ``build_criterion``, ``build_batch``, ``autocast``, ``grad_scaler``,
...), the space's extra dimensions (``run.params``, e.g. ``hidden_size``) and the device
(``run.device``), and two things to call:

- ``with run.timed(): ...`` around what a user pays for (the training steps, not the
  evaluation): the engine's own stopwatch, synchronized at its edges on a GPU and
  nowhere inside;
- ``run.report(value, step)`` after each epoch (``step``: epochs done, a fraction for
  reports every N steps) with the metric the recipe names (its
  value as the user computes it: a minimized metric is turned into a score, higher
  better, here; see ``search/metric.py``): the study's pruner decides there. A stopped
  run raises :class:`Stop` from ``report``; let it through, as with
  ``optuna.TrialPruned``.

The metric on a held-out test split, shown beside the search's own and never used to
select, comes from ``run.report(value, step, test=...)`` (the best step's is kept, also
for a run the pruner stopped) or from the trainer's return value ``{"test": value}`` (a
run that completed).
The built-in engine (``search/training/engine.py``) is a trainer on this same API.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from search.metric import ACCURACY, Metric
from search.training import timing
from search.training.config import TrainConfig

# (step, value, loss, train_seconds so far) -> a reason to stop, or None.
Decide = Callable[[int, float, float, float], "str | bool | None"]
Trainer = Callable[["Run"], Any]


class Stop(Exception):
    """The study ended this run at a report (its pruner, or the time-to-accuracy target);
    the message says why. A trainer lets it through."""


class Diverged(Stop):
    """A reported value was not a number: the run diverged."""


# What ends a run early without failing its trial (``ended`` names its outcome).
ENDINGS = (Stop, torch.OutOfMemoryError)


def ended(e: BaseException) -> tuple[str, str]:
    """The outcome and reason of a run that ``e`` (one of ``ENDINGS``) ended."""
    if isinstance(e, Diverged):
        return "diverged", str(e)
    if isinstance(e, Stop):
        return "pruned", str(e)
    return "oom", f"out of memory: {str(e).splitlines()[0][:200]}"


@dataclass
class TrainResult:
    """The measurement record of one training run."""

    outcome: str  # completed | early-stopped | pruned | diverged | oom
    reason: str
    epochs_run: int  # reports made (epochs, for the built-in engine)
    best_epoch: int  # 1-based report of the best value (0: none)
    accuracy: float  # the best reported value of the metric
    seconds: float  # train seconds up to the end of best_epoch: the reported point
    final_accuracy: float
    train_seconds: float  # all train seconds spent, including epochs after the best
    eval_seconds: float
    samples_per_second: float
    flops_per_sample: float  # forward + backward FLOPs per training example
    flops_per_second: float  # achieved: flops_per_sample * samples trained / train_seconds
    device: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    # The metric on the test split at best_epoch (None without one); never used to select.
    test_accuracy: float | None = None
    tricks: dict[str, Any] = field(default_factory=dict)  # what tricks did (compile: its stats)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Run:
    """One trial's training: its config, extra params and device, its clock and reports."""

    def __init__(self, config: TrainConfig, device: torch.device, *,
                 params: dict[str, Any] | None = None, decide: Decide | None = None,
                 metric: Metric = ACCURACY) -> None:
        self.config = config
        self.metric = metric
        self.device = device
        self.params = dict(params or {})
        self.curve: list[dict[str, float]] = []
        self._clock = timing.Stopwatch(device)
        self._decide = decide

    def timed(self) -> timing.Stopwatch:
        """The timed region: ``with run.timed(): ...`` around the training steps."""
        return self._clock

    @property
    def seconds(self) -> float:
        """Training seconds so far (the timed regions' sum)."""
        return self._clock.seconds

    def report(self, value: float, step: float | None = None, *, loss: float | None = None,
               test: float | None = None) -> None:
        """Record the metric after ``step`` epochs (default: the next whole one, from 1; a
        fraction for reports every N steps: the pruner's rungs are fractions of
        ``config.epochs``) and let the study decide; raises :class:`Stop` when the run
        should end here (:class:`Diverged` when the value, or the validation ``loss`` if
        given, is not a number). ``test``: the metric on the test split at this step,
        kept for the best step's point."""
        value = self.metric.score(float(value))  # the curve holds scores: higher is better
        step = len(self.curve) + 1 if step is None else step
        lost = math.nan if loss is None else float(loss)
        tested = {"test": self.metric.score(float(test))} if test is not None else {}
        self.curve.append({"epoch": step, "seconds": self.seconds, "accuracy": value,
                           "loss": lost, **tested})
        if not math.isfinite(value):
            raise Diverged(f"non-finite value ({value}) reported at step {step}")
        if loss is not None and not math.isfinite(lost):
            raise Diverged(f"non-finite validation loss in epoch {step}")
        stop = self._decide(step, value, lost, self.seconds) if self._decide else None
        if stop:
            raise Stop(stop if isinstance(stop, str) else f"stopped by callback at epoch {step}")

    def best(self) -> int:
        """Index in ``curve`` of the first report of the best value (-1: none yet)."""
        finite = [(p["accuracy"], -i) for i, p in enumerate(self.curve)
                  if math.isfinite(p["accuracy"])]
        return -max(finite)[1] if finite else -1


@contextlib.contextmanager
def on_device(config: TrainConfig, dev: torch.device) -> Iterator[None]:
    """Where a run trains: its CUDA device current (the streams and events it makes are
    that device's) and the config's process-wide switches set (TF32, cuDNN autotuning)."""
    with (torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext(),
          config.switches(dev)):
        yield


def run_trainer(trainer: Trainer, config: TrainConfig, *, device: str | torch.device = "auto",
                params: dict[str, Any] | None = None, decide: Decide | None = None,
                metric: Metric = ACCURACY, warm: bool = True) -> TrainResult:
    """Run a user's ``trainer(run)`` as a trial: never raises for divergence, OOM or a stop.

    A trainer that never reports raises ``RuntimeError`` (the trial fails as ``error``)."""
    dev = timing.resolve_device(device)
    if warm:
        timing.warm_up(dev, config)
    torch.manual_seed(config.seed)
    run = Run(config, dev, params=params, decide=decide, metric=metric)
    outcome, reason, returned = "completed", "", None
    try:
        with on_device(config, dev):
            returned = trainer(run)
    except ENDINGS as e:
        outcome, reason = ended(e)
    if not run.curve and outcome == "completed":
        raise RuntimeError("the trainer returned without calling run.report: the study has "
                           "no metric to judge it by")
    best = run.best()
    test = run.curve[best].get("test") if best >= 0 else None
    if isinstance(returned, dict) and returned.get("test") is not None:
        test = metric.score(float(returned["test"]))
    return result_of(run, outcome, reason, test=test)


def result_of(run: Run, outcome: str, reason: str, *, test: float | None = None,
              eval_seconds: float = 0.0, samples: int = 0, flops: float = 0.0,
              tricks: dict[str, Any] | None = None) -> TrainResult:
    """The record of a finished run: its best report is its point."""
    curve, best, seconds = run.curve, run.best(), run.seconds
    return TrainResult(
        # Whole epochs: a point reported mid-epoch is reproduced by training through it.
        outcome=outcome, reason=reason,
        epochs_run=math.ceil(curve[-1]["epoch"]) if curve else 0,
        best_epoch=math.ceil(curve[best]["epoch"]) if best >= 0 else 0,
        accuracy=curve[best]["accuracy"] if best >= 0 else 0.0,
        seconds=curve[best]["seconds"] if best >= 0 else 0.0,
        final_accuracy=curve[-1]["accuracy"] if curve else 0.0,
        train_seconds=seconds, eval_seconds=eval_seconds,
        samples_per_second=samples / seconds if seconds else 0.0, flops_per_sample=flops,
        flops_per_second=flops * samples / seconds if seconds else 0.0,
        device=timing.fingerprint(run.device, run.config.data_parallel), curve=curve,
        config=run.config.to_dict(),
        test_accuracy=test, tricks=tricks or {})
