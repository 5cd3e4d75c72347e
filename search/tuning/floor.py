"""The accuracy floor: the least accuracy worth having.

A speed/accuracy front is only useful above the accuracy a user would accept: a config
that trains 5x faster to 52% accuracy is not a recipe anyone pastes into their code, yet
it is non-dominated and would sit on the front, crowd the choices and pull the samplers
towards useless corners. A recipe states the floor as

- ``floor: {below_baseline: 0.05}`` (the default): at most 5 accuracy points below the
  baseline config's accuracy (trial 0, the user's own recipe). Relative to the baseline
  because what is worth having depends on the task: 0.90 is good on one and poor on
  another. Five points is the loss a user would trade for a large speed-up, and no more;
- ``floor: {accuracy: 0.9}``: an absolute accuracy;
- ``floor: none``: no floor.

A point below the floor is infeasible for the samplers (an Optuna constraint, so
``optuna best-trials`` agrees), outside the front, the hypervolume and the choices, and
drawn faded. The pruner ranks a trial below the floor (scaled to the rung, see
:meth:`Floor.at`) after every trial above it.

Pure functions over Optuna trials; no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna import Study
from optuna.trial import FrozenTrial, TrialState

from search import metric as metrics
from search.errors import UserError
from search.metric import ACCURACY, Metric
from search.outcomes import INFEASIBLE

DEFAULT = {"below_baseline": 0.05}
BASELINE_ATTR = "baseline"  # user attribute marking the enqueued baseline trial


@dataclass(frozen=True)
class Floor:
    """Exactly one of ``accuracy`` (absolute) and ``below_baseline`` (points below the
    baseline's accuracy) is set, or neither (no floor)."""

    accuracy: float | None = None
    below_baseline: float | None = None

    def __post_init__(self) -> None:
        if self.accuracy is not None and self.below_baseline is not None:
            raise ValueError("a floor is absolute or relative to the baseline, not both")

    @property
    def off(self) -> bool:
        return self.accuracy is None and self.below_baseline is None

    def resolve(self, baseline_accuracy: float | None) -> float | None:
        """The absolute floor; None when there is none, or when it is relative and the
        baseline has no accuracy yet (it is still running, or failed)."""
        if self.accuracy is not None:
            return self.accuracy
        if self.below_baseline is None or baseline_accuracy is None:
            return None
        return baseline_accuracy - self.below_baseline

    def at(self, baseline_curve: Sequence[dict[str, Any]], seconds: float,
           baseline_accuracy: float | None) -> float | None:
        """The floor for a point measured after ``seconds`` of training, early in a run.

        Early in training every config is below the final floor, so a rung compares with
        what the baseline had reached by the same training seconds, less the margin the
        final floor leaves below the baseline's final accuracy. Compared at equal seconds,
        not equal epochs, a config with cheap epochs is not held to the baseline's
        accuracy after as many epochs. The baseline's accuracy at ``seconds`` is read off
        its curve (best so far), linearly interpolated between its epochs and from 0 at
        0 s before its first: a trial twice as fast as the baseline's first epoch is held
        to half that epoch's accuracy. None (no floor) while the baseline has no epoch,
        or when the margin is unknown (an absolute floor before the baseline finished).
        """
        return self.at_each(baseline_curve, [seconds], baseline_accuracy)[0]

    def at_each(self, baseline_curve: Sequence[dict[str, Any]], seconds: Sequence[float],
                baseline_accuracy: float | None) -> list[float | None]:
        """:meth:`at` for many points: the baseline's curve is laid out once, and each
        point looks its seconds up by bisection (a rung of 10,000 points costs
        milliseconds, not a pass over the curve per point)."""
        if self.off or not baseline_curve:
            return [None] * len(seconds)
        if self.below_baseline is not None:
            margin = self.below_baseline
        elif baseline_accuracy is not None:
            margin = baseline_accuracy - self.accuracy
        else:
            return [None] * len(seconds)
        return [float(v) - margin for v in _interpolate(baseline_curve, seconds)]

    def describe(self, resolved: float | None, metric: Metric = ACCURACY) -> str:
        """The floor in a few words, for status lines and the report, in the metric's
        units (``resolved`` is a score: a minimized metric's floor is above the baseline)."""
        if self.off:
            return "none"
        if self.accuracy is not None:
            return f"{metric.value(self.accuracy):.4f}"
        side = "below" if metric.maximize else "above"
        if resolved is None:
            return f"{self.below_baseline:g} {side} the baseline (not measured yet)"
        return f"{metric.value(resolved):.4f} ({self.below_baseline:g} {side} the baseline)"

    def to_mapping(self) -> dict[str, float] | None:
        if self.accuracy is not None:
            return {"accuracy": self.accuracy}
        if self.below_baseline is not None:
            return {"below_baseline": self.below_baseline}
        return None


def _interpolate(curve: Sequence[dict[str, Any]], seconds: Sequence[float]) -> np.ndarray:
    """Best-so-far accuracy of ``curve`` at each of ``seconds``: linear between its epochs,
    from (0 s, 0) before the first, flat after the last (the epoch that ends at or after
    a time is found by bisection, all times at once)."""
    times = np.array([0.0, *(float(e["seconds"]) for e in curve)])
    bests = np.maximum.accumulate(np.array([0.0, *(float(e["accuracy"]) for e in curve)]))
    at = np.asarray(seconds, dtype=float)
    # The first epoch that ended at or after each time (the point at 0 s excluded).
    i = np.minimum(np.searchsorted(times[1:], at, side="left") + 1, len(times) - 1)
    span = times[i] - times[i - 1]
    share = np.divide(at - times[i - 1], span, out=np.zeros_like(at), where=span > 0)
    out = np.where(span > 0, bests[i - 1] + (bests[i] - bests[i - 1]) * share, bests[i])
    return np.where(at > times[-1], bests[-1], out)


def parse(raw: Any, *, source: str = "") -> Floor:
    """A recipe's ``floor`` value (None: the default); bad values are one UserError."""
    if raw is None:
        raw = DEFAULT
    if raw == "none":
        return Floor()
    if not isinstance(raw, dict) or len(raw) != 1:
        raise UserError(f"floor: must be {{below_baseline: POINTS}}, {{accuracy: VALUE}} or "
                        f"none, got {raw!r}", source=source)
    (key, value), = raw.items()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "accuracy":
        if not number or not 0 <= value <= 1:
            raise UserError(f"floor.accuracy: must be a number in [0, 1], got {value!r}",
                            source=source)
        return Floor(accuracy=float(value))
    if key == "below_baseline":
        if not number or not 0 <= value <= 1:
            raise UserError(f"floor.below_baseline: must be accuracy points in [0, 1], "
                            f"got {value!r}", source=source)
        return Floor(below_baseline=float(value))
    raise UserError(f"floor.{key}: unknown key (valid: accuracy, below_baseline)",
                    source=source)


def of_recipe(content: dict[str, Any] | None) -> Floor:
    """The floor of a stored recipe (a study made before floors existed gets the default),
    in score units: an absolute floor of a minimized metric is negated, as its scores are."""
    floor = parse((content or {}).get("floor"))
    metric = metrics.of_recipe(content)
    if floor.accuracy is not None and not metric.maximize:
        return dataclasses.replace(floor, accuracy=metric.score(floor.accuracy))
    return floor


def baseline_trial(trials: Iterable[FrozenTrial], device: str | None = None
                   ) -> FrozenTrial | None:
    """The study's baseline trial (marked when enqueued), on ``device`` if given; the first
    one if it ran more than once (a retry after a crash)."""
    for t in sorted(trials, key=lambda t: t.number):
        if t.user_attrs.get(BASELINE_ATTR) and t.state != TrialState.FAIL and (
                device is None or t.user_attrs.get("device") == device):
            return t
    return None


def find_baseline(study: Study, device: str | None = None) -> FrozenTrial | None:
    """:func:`baseline_trial` of a study, reading only the trials marked as baselines
    (one query), not the whole study."""
    from search.tuning import queries

    return baseline_trial((study._storage.get_trial(i)
                           for i in queries.flagged(study, BASELINE_ATTR)), device)


def baseline_accuracy(trial: FrozenTrial | None) -> float | None:
    """The baseline's final accuracy; None until it completed feasibly."""
    if trial is None or trial.state != TrialState.COMPLETE or not trial.values:
        return None
    if trial.user_attrs.get("outcome") in INFEASIBLE:
        return None
    accuracy = trial.values[0] if len(trial.values) == 2 else \
        trial.user_attrs.get("result", {}).get("accuracy")
    return float(accuracy) if accuracy is not None and math.isfinite(accuracy) else None


def resolve(trials: Iterable[FrozenTrial], content: dict[str, Any] | None) -> float | None:
    """The absolute floor of a study's trials under its stored recipe (None: no floor)."""
    return of_recipe(content).resolve(baseline_accuracy(baseline_trial(trials)))


def of_study(study: Study, trials: Iterable[FrozenTrial]) -> float | None:
    """The absolute floor of a ``pareto`` study, from its stored recipe and its baseline
    among ``trials`` (None: no floor, not known yet, or a time-to-accuracy study, whose
    target already says what accuracy is worth having)."""
    if len(study.directions) != 2:
        return None
    return resolve(trials, study.user_attrs.get("recipe"))
