"""Pure functions over the trials of a study: the speed/accuracy front and choices on it.

Everything here reads Optuna ``FrozenTrial`` objects (``study.trials``) and returns plain
data; nothing draws (``search/reviewing/plots.py`` does) and nothing imports torch. A ``pareto``
study stores ``values == [accuracy, seconds]`` with directions ``[maximize, minimize]``;
see ``docs/architecture.md`` for the user attributes (``curve``, ``outcome``, ``device``).

Trials are only comparable within one device key, so the functions that build a front
take an optional ``device`` filter.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from search.outcomes import DEFAULT_OUTCOME, ENDED, INFEASIBLE, STATE_OUTCOME

__all__ = [
    "Point",
    "curves",
    "default_reference",
    "devices",
    "fastest_reaching",
    "hypervolume",
    "below_floor",
    "feasible",
    "hypervolume_history",
    "knee",
    "most_accurate_within",
    "outcome_counts",
    "pareto_front",
    "points",
    "spent_seconds",
    "step_line",
]

UNKNOWN_DEVICE = "unknown"

# The outcome a trial without a stored ``outcome`` attribute is counted under.



@dataclass(frozen=True)
class Point:
    """One completed trial in (accuracy, seconds) space.

    ``accuracy`` is the best validation accuracy (maximize); ``seconds`` the training time
    up to the epoch where it was first reached (minimize).
    """

    number: int
    accuracy: float
    seconds: float
    params: dict[str, Any] = field(default_factory=dict, compare=False)
    outcome: str = DEFAULT_OUTCOME
    device: str = UNKNOWN_DEVICE


def _device_of(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get("device", UNKNOWN_DEVICE))


def _point(trial: FrozenTrial) -> Point:
    """A trial's (accuracy, seconds): its two values in a pareto study; in a
    time-to-accuracy study its one value (seconds) and the accuracy it reached."""
    values = trial.values
    if values is None or len(values) not in (1, 2):
        got = None if values is None else len(values)
        raise ValueError(f"trial {trial.number}: expected values [accuracy, seconds] or "
                         f"[seconds], got {got}")
    if len(values) == 1:
        accuracy = float(trial.user_attrs.get("result", {}).get("accuracy", 0.0))
    else:
        accuracy = float(values[0])
    return Point(
        number=trial.number,
        accuracy=accuracy,
        seconds=float(values[-1]),
        params=dict(trial.params),
        outcome=str(trial.user_attrs.get("outcome", DEFAULT_OUTCOME)),
        device=_device_of(trial),
    )




def feasible(trial: FrozenTrial, floor: float | None = None) -> bool:
    """Complete, not diverged or out of memory (those complete as infeasible), and at or
    above the accuracy ``floor`` (absolute; None: no floor, see ``search/tuning/floor.py``)."""
    return (trial.state == TrialState.COMPLETE
            and trial.user_attrs.get("outcome") not in INFEASIBLE
            and (floor is None or _point(trial).accuracy >= floor))


def below_floor(trial: FrozenTrial, floor: float | None) -> bool:
    """Complete and measured, but below the accuracy floor: drawn faded, never chosen."""
    return floor is not None and feasible(trial) and not feasible(trial, floor)


def points(trials: Iterable[FrozenTrial], *, device: str | None = None,
           floor: float | None = None) -> list[Point]:
    """The feasible COMPLETE trials as points, in trial-number order.

    ``device``: keep only trials whose ``device`` user attribute equals this key (trials
    without one have the key ``"unknown"``). ``floor``: leave out points below this
    accuracy. Raises ``ValueError`` for a complete trial that does not have one or two
    values.
    """
    result = [
        _point(t)
        for t in trials
        if feasible(t, floor) and (device is None or _device_of(t) == device)
    ]
    return sorted(result, key=lambda p: p.number)


def devices(trials: Iterable[FrozenTrial]) -> list[str]:
    """The device keys of all trials (any state), most trials first, ties by name."""
    counts = Counter(_device_of(t) for t in trials)
    return sorted(counts, key=lambda key: (-counts[key], key))


def pareto_front(candidates: Iterable[Point]) -> list[Point]:
    """The non-dominated points (accuracy max, seconds min), sorted by seconds ascending.

    A point is dominated when another is at least as accurate and at least as fast and
    strictly better in one of the two. Points with equal accuracy and seconds do not
    dominate each other, so duplicates on the front are all kept (ordered by number).
    Along the returned list accuracy is non-decreasing.
    """
    ordered = sorted(candidates, key=lambda p: (p.seconds, -p.accuracy, p.number))
    front: list[Point] = []
    for p in ordered:
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
        elif p.accuracy == front[-1].accuracy and p.seconds == front[-1].seconds:
            front.append(p)  # an exact duplicate of a front point
    return front


def step_line(
    front: Iterable[Point], *, until: float | None = None
) -> tuple[list[float], list[float]]:
    """x (seconds) and y (accuracy) of the front drawn as an "hv" step line.

    Read at a time budget x, the line gives the best accuracy attainable within x: from
    each front point it runs horizontally to the next point's seconds, then vertically up
    to that point's accuracy. The coordinates are explicit, so a plot draws them as a
    plain line. ``until``: extend the last level horizontally to this many seconds (it
    must not be below the front's largest seconds). The input is reduced to its front
    first, so any set of points works; an empty input gives two empty lists.
    """
    distinct: list[Point] = []
    for p in pareto_front(front):
        if not distinct or (p.seconds, p.accuracy) != (distinct[-1].seconds, distinct[-1].accuracy):
            distinct.append(p)
    if not distinct:
        return [], []
    xs = [distinct[0].seconds]
    ys = [distinct[0].accuracy]
    for p in distinct[1:]:
        xs += [p.seconds, p.seconds]
        ys += [ys[-1], p.accuracy]
    if until is not None:
        if until < xs[-1]:
            raise ValueError(f"until must be >= the front's largest seconds {xs[-1]}, got {until}")
        if until > xs[-1]:
            xs.append(float(until))
            ys.append(ys[-1])
    return xs, ys


def _most_accurate(candidates: Sequence[Point]) -> Point:
    return min(candidates, key=lambda p: (-p.accuracy, p.seconds, p.number))


def knee(front: Iterable[Point]) -> Point:
    """The knee of the front: the best trade-off between the two extremes.

    Over the front, accuracy and seconds are each scaled to [0, 1] (min-max), which puts
    the fastest point at (0, 0) and the most accurate at (1, 1). The knee is the point
    farthest from the straight line between them *on the good side* (more accurate than
    the line at its time): it maximizes ``accuracy' - seconds'`` (proportional to the
    signed distance). A point below the line is a worse trade-off than either extreme,
    so absolute distance is not used. Ties (including a front without a point above
    the line, where both extremes score 0) go to the more accurate point, then fewer
    seconds, then lower number.

    With fewer than three distinct (accuracy, seconds) positions there is no bend to
    find, and the most accurate point is returned: the user asked for accuracy first,
    and time is the cost. The input is reduced to its front first. Raises ``ValueError``
    when empty.
    """
    pts = pareto_front(front)
    if not pts:
        raise ValueError("knee of an empty front")
    if len({(p.accuracy, p.seconds) for p in pts}) < 3:
        return _most_accurate(pts)
    a_lo, a_hi = pts[0].accuracy, pts[-1].accuracy
    s_lo, s_hi = pts[0].seconds, pts[-1].seconds
    # Three distinct front positions imply both ranges are positive.
    return min(
        pts,
        key=lambda p: (
            -((p.accuracy - a_lo) / (a_hi - a_lo) - (p.seconds - s_lo) / (s_hi - s_lo)),
            -p.accuracy,
            p.seconds,
            p.number,
        ),
    )


def fastest_reaching(candidates: Iterable[Point], min_accuracy: float) -> Point | None:
    """The fastest point with ``accuracy >= min_accuracy``, or None when none reaches it.

    Ties go to the higher accuracy, then the lower trial number.
    """
    reaching = [p for p in candidates if p.accuracy >= min_accuracy]
    if not reaching:
        return None
    return min(reaching, key=lambda p: (p.seconds, -p.accuracy, p.number))


def most_accurate_within(candidates: Iterable[Point], max_seconds: float) -> Point | None:
    """The most accurate point with ``seconds <= max_seconds``, or None when none fits.

    Ties go to fewer seconds, then the lower trial number.
    """
    within = [p for p in candidates if p.seconds <= max_seconds]
    if not within:
        return None
    return _most_accurate(within)


def _check_reference(reference: tuple[float, float]) -> tuple[float, float]:
    if len(reference) != 2 or not all(math.isfinite(float(v)) for v in reference):
        raise ValueError(
            f"reference must be two finite numbers (accuracy, seconds), got {reference!r}"
        )
    return float(reference[0]), float(reference[1])


def hypervolume(candidates: Iterable[Point], reference: tuple[float, float]) -> float:
    """Area of (accuracy, seconds) space dominated by the points and bounded by reference.

    ``reference = (accuracy_ref, seconds_ref)`` is a worst acceptable corner: a point
    contributes only if it is strictly more accurate than ``accuracy_ref`` and strictly
    faster than ``seconds_ref``. Units are accuracy x seconds. A sweep over the front in
    seconds order: between one front point's seconds and the next (or ``seconds_ref``),
    the attained accuracy is that point's, so each front point adds a rectangle.
    """
    a_ref, s_ref = _check_reference(reference)
    inside = [p for p in candidates if p.accuracy > a_ref and p.seconds < s_ref]
    front = pareto_front(inside)
    total = 0.0
    for i, p in enumerate(front):
        next_seconds = front[i + 1].seconds if i + 1 < len(front) else s_ref
        total += (next_seconds - p.seconds) * (p.accuracy - a_ref)
    return total


def default_reference(candidates: Iterable[Point]) -> tuple[float, float]:
    """A reference for ``hypervolume``: accuracy 0.0 and 1.1 x the largest seconds.

    Accuracy 0 is the worst a classifier can score, so every point counts; the 10%
    margin beyond the slowest point keeps the slowest front point's contribution
    positive. Raises ``ValueError`` when there are no points.
    """
    seconds = [p.seconds for p in candidates]
    if not seconds:
        raise ValueError("default reference of no points")
    return 0.0, 1.1 * max(seconds)


def spent_seconds(trial: FrozenTrial) -> float:
    """Training seconds a trial spent: the last ``curve`` entry's cumulative seconds.

    The curve covers every epoch run, so this is the cost also for a complete trial
    whose best accuracy (and ``values[1]``) came before its last epoch. A trial without
    a curve costs ``values[1]`` when complete, otherwise 0 (it failed before an epoch).
    """
    curve = trial.user_attrs.get("curve") or []
    if curve:
        return float(curve[-1]["seconds"])
    if trial.state == TrialState.COMPLETE and trial.values is not None and len(trial.values) == 2:
        return float(trial.values[1])
    return 0.0


def hypervolume_history(
    trials: Iterable[FrozenTrial],
    reference: tuple[float, float],
    *,
    device: str | None = None,
    floor: float | None = None,
) -> list[tuple[int, float, float]]:
    """Hypervolume of the front as the study spent training time.

    One row per finished trial (COMPLETE, PRUNED or FAIL) in trial-number order:
    ``(number, cumulative seconds spent by all finished trials up to it, hypervolume of
    the front of the feasible complete trials up to it)``. Trials without a feasible
    point (pruned in a time-to-accuracy study, failed, below the ``floor``) add their
    cost (``spent_seconds``) but no point, so the hypervolume stays flat there; it never
    decreases. Running and waiting trials are left out (their cost is not final).
    ``device`` restricts both the cost and the front to one device key.
    """
    ref = _check_reference(reference)
    finished = sorted(
        (t for t in trials if t.state in ENDED and (device is None or _device_of(t) == device)),
        key=lambda t: t.number,
    )
    history: list[tuple[int, float, float]] = []
    seen: list[Point] = []
    spent = 0.0
    for t in finished:
        spent += spent_seconds(t)
        if feasible(t, floor):
            # Only the front can matter for later fronts, so keep it small.
            seen = pareto_front([*seen, _point(t)])
        history.append((t.number, spent, hypervolume(seen, ref)))
    return history


def outcome_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """How many trials ended how: the ``outcome`` user attribute, else the Optuna state.

    A trial without ``outcome`` counts as ``running``, ``waiting``, ``completed``,
    ``pruned`` or ``failed`` by its state. Ordered by count descending, then name.
    """
    counts: Counter[str] = Counter()
    for t in trials:
        outcome = t.user_attrs.get("outcome")
        counts[str(outcome) if outcome is not None else STATE_OUTCOME[t.state]] += 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def curves(trials: Iterable[FrozenTrial], numbers: Iterable[int]) -> dict[int, list[dict]]:
    """The stored learning curves (``curve`` user attribute) of the given trial numbers.

    A trial without a curve maps to ``[]``. The entries are copies. Raises ``ValueError``
    naming the numbers that are not in ``trials``.
    """
    by_number = {t.number: t for t in trials}
    wanted = list(numbers)
    missing = [n for n in wanted if n not in by_number]
    if missing:
        raise ValueError(f"no trial with number {', '.join(map(str, missing))}")
    return {
        n: [dict(entry) for entry in by_number[n].user_attrs.get("curve") or []] for n in wanted
    }
