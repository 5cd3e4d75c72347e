"""Successive halving for the (accuracy, seconds) Pareto objective.

Optuna refuses ``Trial.report`` and ``Trial.should_prune`` in multi-objective studies, so
we prune ourselves. Every running trial writes its learning curve to the user attribute
``curve`` after each epoch, and its point at each rung it crosses to a rung record (a
system attribute, see ``docs/architecture.md``); the pruner reads the records of the rung
it decides (a study made before records existed: every curve).

Rungs sit at ``min_resource * eta**k`` epochs, seconds, or fractions of the trial's own
schedule (``resource: fraction``, ``min_resource`` below 1: 1/9 gives rungs at 1/9, 1/3
and 1 of the ``epochs`` the lr schedule is laid out for). Fractions are for spaces that
search ``epochs``: measured on the digits study (then the default; digits 5-9, momentum
or Adam, one-cycle schedule, 2 seeds), after one epoch a 10-epoch run was at 0.18-0.34
accuracy (still warming up) while a 2-epoch run was at 0.62-0.83, yet the 10-epoch run
ended at 0.99 against 0.78-0.93; with cosine the first-epoch gap was small. Judged at equal epochs,
the long schedule is stopped for being early in its schedule; at equal fractions, each
run is judged at the same phase of its own schedule. When a trial's curve first
crosses a rung, every trial on the same device whose curve reached that rung is given its
point there: the point it would report had it stopped at the rung (its best accuracy so
far, and the seconds at the end of the epoch that first reached it; see ``point_at``).
A rung decides once ``min_trials_at_rung`` trials reached it (default 2: the trial and
one other, usually the baseline; waiting for three let a slow second trial spend 10 s
of a 25 s budget unjudged in the efficiency benchmark).

The rule, and why:

1. **The front is kept.** A trial that is non-dominated at its rung among the points
   worth having (at or above the accuracy floor, ``search/tuning/floor.py``, scaled to the
   rung by ``Floor.at``) continues. Successive halving's "top ``n // eta``" alone, on a
   2-D ranking, always loses one end of the front: the fast end, which is the point of
   this tool (a 10x-faster trial at 0.94 was pruned against the baseline at 0.95).
   Syne Tune's MOASHA keeps a fixed top fraction of an epsilon-net order, so it drops
   front points too once the front outgrows the fraction; OptunaHub's multi_metric_pruner
   also never prunes a front-0 trial, but has no floor, so a fast trial that learned
   nothing is kept as well. The floor is what makes keeping the whole front affordable.
2. **Otherwise successive halving**: the trial continues only if it is among the top
   ``max(1, n // eta)`` of the ``n`` trials at the rung (Optuna's
   ``SuccessiveHalvingPruner`` rule), in this order, best first:

   a. points worth having before points below the floor;
   b. non-dominated front index within that group (accuracy maximized, seconds
      minimized; equal points do not dominate each other), lower first;
   c. exclusive hypervolume contribution within the front, larger first, against a
      reference just beyond the group's worst point in both objectives (NSGA-II's
      crowding distance and OptunaHub's tie-break in spirit: both ends of a front
      contribute, unlike a reference at the worst accuracy, where the fast end
      contributes nothing);
   d. trial number, lower first (the earlier trial wins).

The baseline trial (the user's recipe, trial 0) is never pruned: it is the reference the
floor is measured from. Decisions read the storage, so they stay correct with several
workers; trials from other devices never compete (their seconds are not comparable).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError
from search.tuning import floor as floors
from search.tuning import queries

Point = tuple[float, float]  # (accuracy, seconds)

RESOURCES = ("epochs", "seconds", "fraction")
# The curve entry key that measures each resource. ``fraction`` is the share of the
# trial's own schedule done (epoch / epochs), see the module docstring.
_RESOURCE_KEY = {"epochs": "epoch", "seconds": "seconds", "fraction": "fraction"}
_EPS = 1e-9  # a fraction such as 3/9 must reach the rung 1/9 * 3 despite rounding
# Trials whose curves are real measurements. FAIL and WAITING trials are left out.
_COMPETING_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def _dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` is at least as good as ``b`` in both objectives and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """Front index of each (accuracy, seconds) point; 0 is the non-dominated front.

    Accuracy is maximized and seconds minimized; a point's front is one more than the
    highest front of the points dominating it. In two objectives this takes a sort and a
    bisection per point, O(n log n) (NSGA-II's general sort compares all pairs, which at
    a rung of 10,000 trials is 50 million comparisons): points are taken in decreasing
    accuracy, and ``lowest[k]``, the fewest seconds of any point placed in front k so far,
    never decreases with k, so the fronts holding a point that dominates the next one are
    exactly the first ``bisect_right(lowest, seconds)``. Points of equal accuracy are
    placed together: among them only fewer seconds dominates.
    """
    by_accuracy = sorted(range(len(points)), key=lambda i: (-points[i][0], points[i][1]))
    ranks = [0] * len(points)
    lowest: list[float] = []
    for _, equal in itertools.groupby(by_accuracy, key=lambda i: points[i][0]):
        group = list(equal)  # equal accuracy, by seconds
        before, before_seconds, done = -1, None, -1  # highest front of fewer seconds in group
        for i in group:
            seconds = points[i][1]
            if seconds != before_seconds:
                done, before_seconds = before, seconds
            ranks[i] = max(bisect.bisect_right(lowest, seconds), done + 1)
            before = max(before, ranks[i])
        for i in group:
            if ranks[i] == len(lowest):
                lowest.append(points[i][1])
            else:
                lowest[ranks[i]] = min(lowest[ranks[i]], points[i][1])
    return ranks


def reference_point(points: Sequence[Point]) -> Point:
    """A reference just beyond the worst point in both objectives: 0.1 x the accuracy
    spread (at least 0.01) below the worst accuracy, and 1.1 x the slowest seconds.

    Beyond the worst point, every point of a front contributes area, both of its ends
    included: measured from the worst accuracy itself, the least accurate point of a
    front (almost always the fastest) would contribute nothing and rank last.
    """
    low, high = min(p[0] for p in points), max(p[0] for p in points)
    return low - max(0.1 * (high - low), 0.01), 1.1 * max(p[1] for p in points)


def hypervolume_contributions(front: Sequence[Point], reference: Point) -> list[float]:
    """Exclusive hypervolume contribution of each point of one non-dominated front.

    The area (accuracy x seconds, against ``reference``) that only this point dominates:
    in a 2-D front sorted by seconds, the rectangle between it and its two neighbours.
    Equal points share their area, so each contributes nothing exclusively.
    """
    n = len(front)
    by_seconds = sorted(range(n), key=lambda i: (front[i][1], -front[i][0], i))
    out = [0.0] * n
    for k, i in enumerate(by_seconds):
        acc, sec = front[i]
        next_sec = front[by_seconds[k + 1]][1] if k + 1 < n else reference[1]
        prev_acc = front[by_seconds[k - 1]][0] if k > 0 else reference[0]
        out[i] = max(0.0, next_sec - sec) * max(0.0, acc - prev_acc)
    return out


def order(points: Sequence[Point], numbers: Sequence[int],
          worth: Sequence[bool] | None = None) -> list[int]:
    """Indices of ``points`` best first: points worth having (``worth``, default all)
    before the others; within each group by front, then hypervolume contribution within
    the front (against the group's ``reference_point``), then trial number.

    ``numbers`` are the trial numbers of the points; the lower number wins a full tie.
    """
    worth = [True] * len(points) if worth is None else list(worth)
    if not len(points) == len(numbers) == len(worth):
        raise ValueError(f"points, numbers and worth must have the same length, got "
                         f"{len(points)}, {len(numbers)} and {len(worth)}")
    ranks, contribution = [0] * len(points), [0.0] * len(points)
    for group in (True, False):
        members = [i for i, w in enumerate(worth) if w == group]
        if not members:
            continue
        group_points = [points[i] for i in members]
        reference = reference_point(group_points)
        group_ranks = nondominated_ranks(group_points)
        fronts: dict[int, list[int]] = {}
        for k, r in enumerate(group_ranks):
            fronts.setdefault(r, []).append(k)
        for rank, front in fronts.items():
            areas = hypervolume_contributions([group_points[k] for k in front], reference)
            for k, area in zip(front, areas, strict=True):
                ranks[members[k]], contribution[members[k]] = rank, area
    return sorted(range(len(points)),
                  key=lambda i: (not worth[i], ranks[i], -contribution[i], numbers[i]))


def place(points: Sequence[Point], numbers: Sequence[int], worth: Sequence[bool]) -> int:
    """``order(points, numbers, worth).index(0)``: how many points rank ahead of point 0,
    computed from only what can be ahead of it.

    The other group is wholly ahead (point 0 below the floor) or behind. Within its own
    group, a point that point 0 dominates is on a later front, so behind; the points it
    does not dominate keep their fronts without those (a front depends only on the points
    dominating it, and whatever dominates one of them is not dominated by point 0 either),
    so fronts are found among them alone, and contributions only for point 0's own front,
    against the whole group's reference point.
    """
    w = worth[0]
    xy = np.asarray(points, dtype=float)
    group = np.asarray(worth, dtype=bool) == w
    ahead = 0 if w else int(np.count_nonzero(~group))
    mine_xy = xy[group]
    low, high = float(mine_xy[:, 0].min()), float(mine_xy[:, 0].max())
    reference = reference_point([(low, 0.0), (high, float(mine_xy[:, 1].max()))])
    acc, sec = xy[0]
    dominated = (acc >= xy[:, 0]) & (sec <= xy[:, 1]) & ((acc > xy[:, 0]) | (sec < xy[:, 1]))
    up = np.flatnonzero(group & ~dominated).tolist()  # point 0 first
    ranks = nondominated_ranks([points[i] for i in up])
    mine = ranks[0]
    ahead += sum(1 for r in ranks if r < mine)
    front = [i for i, r in zip(up, ranks, strict=True) if r == mine]
    areas = hypervolume_contributions([points[i] for i in front], reference)
    key = {i: (-area, numbers[i]) for i, area in zip(front, areas, strict=True)}
    return ahead + sum(1 for i in front if key[i] < key[0])


def _check_eta(eta: int) -> None:
    # bool is an int subclass; eta=True is a mistake, not 1.
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ValueError(f"eta must be an integer >= 2, got {eta!r}")


def _check_min_resource(min_resource: float) -> None:
    if (isinstance(min_resource, bool) or not isinstance(min_resource, (int, float))
            or not math.isfinite(min_resource) or min_resource <= 0):
        raise ValueError(f"min_resource must be a finite number > 0, got {min_resource!r}")


def keeps(n: int, eta: int) -> int:
    """How many of ``n`` trials at a rung continue: ``max(1, n // eta)``.

    The same rule as Optuna's ``SuccessiveHalvingPruner``: 4 trials at eta=3 keep 1.
    At least one always continues, since a trial cannot wait for later competitors.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    _check_eta(eta)
    return max(1, n // eta)


def rungs(min_resource: float, eta: int, max_resource: float | None) -> Iterator[float]:
    """Rung levels ``min_resource * eta**k`` for k = 0, 1, ..., up to ``max_resource``.

    Yields forever when ``max_resource`` is None.
    """
    _check_min_resource(min_resource)
    _check_eta(eta)
    k = 0
    # Computed afresh each step, not multiplied up, so float error does not accumulate.
    while max_resource is None or min_resource * eta**k <= max_resource:
        yield float(min_resource * eta**k)
        k += 1


def point_at(curve: Sequence[dict[str, Any]], level: float, resource: str) -> Point | None:
    """The point a trial would report had it stopped at a rung; None before it got there.

    The run stops at the first curve entry whose ``resource`` is >= ``level``; its point
    is then its best accuracy up to that entry and the seconds at the end of the epoch
    that first reached that accuracy: the same point a stopped trial reports
    (``search/tuning/objective.py``), and re-training its config for that many epochs
    reproduces it.
    """
    if resource not in _RESOURCE_KEY:
        raise ValueError(f"resource must be one of {', '.join(RESOURCES)}, got {resource!r}")
    key = _RESOURCE_KEY[resource]
    best: Point = (-math.inf, 0.0)
    for entry in curve:
        if entry["accuracy"] > best[0]:
            best = (float(entry["accuracy"]), float(entry["seconds"]))
        reached = entry.get(key)  # curves stored before fractions existed have none
        if reached is not None and reached >= level - _EPS:
            return best
    return None


class Pruner:
    """What the objective asks after every epoch of a pareto trial: :meth:`prune` (a
    reason to stop it, or None). :meth:`record` comes first, every epoch, judged or not,
    for a pruner that keeps records of its own, and :meth:`forget` when a trial starts;
    both do nothing here. The benchmarks' peers (MOASHA, OptunaHub's pruner) are Pruners
    too."""

    def forget(self, study: optuna.Study, trial: Any) -> None:
        """A trial starts (it may be a retry carrying a failed trial's records)."""

    def record(self, study: optuna.Study, trial: Any, curve: Sequence[dict[str, Any]], *,
               device: str | None, baseline: bool = False) -> None:
        """A trial's curve grew by one epoch."""

    def prune(self, study: optuna.Study, trial: Any, curve: list[dict[str, Any]]
              ) -> str | None:
        raise NotImplementedError


class ParetoSuccessiveHalving(Pruner):
    """Successive halving over the (accuracy, seconds) Pareto ranking of a study's trials.

    Call :meth:`prune` after every epoch of a trial with its curve so far; a returned
    reason means the trial should stop (it then completes with the point it reached and
    outcome ``pruned``: ``search/tuning/objective.py``). ``floor``: the study's accuracy floor
    (None: every point is worth having).
    """

    def __init__(
        self,
        *,
        eta: int = 3,
        min_resource: float = 1.0,
        resource: str = "epochs",
        min_trials_at_rung: int = 2,
        floor: floors.Floor | None = None,
    ) -> None:
        _check_eta(eta)
        _check_min_resource(min_resource)
        if resource not in RESOURCES:
            raise ValueError(f"resource must be one of {', '.join(RESOURCES)}, got {resource!r}")
        if resource == "fraction" and min_resource >= 1:
            raise ValueError(f"min_resource must be below 1 with resource fraction (a share of "
                             f"the schedule), got {min_resource!r}")
        if (isinstance(min_trials_at_rung, bool) or not isinstance(min_trials_at_rung, int)
                or min_trials_at_rung < 1):
            raise ValueError(
                f"min_trials_at_rung must be an integer >= 1, got {min_trials_at_rung!r}")
        self.eta = eta
        self.min_resource = float(min_resource)
        self.resource = resource
        self.min_trials_at_rung = min_trials_at_rung
        self.floor = floor
        self._recorded: dict[tuple[int, int], bool] = {}  # study: whether it records rungs
        self._baselines: dict[tuple[int, int, Any], FrozenTrial] = {}  # completed ones
        self._rungs: dict[tuple[int, int, float], _Rung] = {}  # what this process read

    def _crossed(self, curve: Sequence[dict[str, Any]]) -> list[float]:
        """The rungs first crossed by the curve's last entry, lowest first.

        A rung is crossed by the entry that reaches it after the previous entry did not,
        so each rung is recorded and decided once, however many epochs later it is asked.
        """
        if not curve:
            return []
        key = _RESOURCE_KEY[self.resource]
        now = curve[-1][key] + _EPS
        before = curve[-2][key] + _EPS if len(curve) > 1 else -math.inf
        return [level for level in rungs(self.min_resource, self.eta, now) if level > before]

    def _rung_crossed(self, curve: Sequence[dict[str, Any]]) -> float | None:
        """The highest rung first crossed by the curve's last entry, if any."""
        crossed = self._crossed(curve)
        return crossed[-1] if crossed else None

    def key(self, level: float) -> str:
        """The trial system attribute holding a trial's point at rung ``level``."""
        return f"{queries.PRIVATE}rung:{self.resource}:{level:.12g}"

    def forget(self, study: optuna.Study, trial: Any) -> None:
        """Void the rung records a trial inherited: Optuna's retry of a failed trial copies
        its system attributes into the new one, which has reached no rung yet."""
        for key in study._storage.get_trial_system_attrs(trial._trial_id):
            if key.startswith(f"{queries.PRIVATE}rung:"):
                study._storage.set_trial_system_attr(trial._trial_id, key, None)

    def record(self, study: optuna.Study, trial: Any, curve: Sequence[dict[str, Any]], *,
               device: str | None, baseline: bool = False) -> None:
        """Store the trial's point at each rung its latest epoch crossed, with its device
        and whether it is the baseline: the compact record :meth:`prune` reads instead of
        every trial's curve. Call after every epoch of every trial, judged or not (the
        baseline's and a compiled trial's first epochs count for the others)."""
        for level in self._crossed(curve):
            acc, sec = point_at(curve, level, self.resource)  # type: ignore[misc]
            study._storage.set_trial_system_attr(trial._trial_id, self.key(level),
                                                 [acc, sec, device, bool(baseline)])

    def prune(self, study: optuna.Study, trial: Any, curve: list[dict[str, Any]]
              ) -> str | None:
        """A reason to prune ``trial`` (an Optuna trial) at its latest epoch, or None.

        ``curve`` is the trial's own curve (the storage may lag behind it). Other trials
        compete with their points recorded at the rung (:meth:`record`) if they are
        complete, pruned or running, and only if they were measured on this trial's
        ``device`` (user attribute): seconds measured on different devices are not
        comparable. What is read is those points, the trial's own attributes and the
        baseline's curve (once it completed): the cost grows with the trials at the
        rung, not with the study's records.
        """
        level = self._rung_crossed(curve)
        if level is None:
            return None  # nothing to decide; spare the storage a query
        own = point_at(curve, level, self.resource)
        assert own is not None  # the last entry crossed the level
        mine = study._storage.get_trial(trial._trial_id).user_attrs
        if mine.get(floors.BASELINE_ATTR):
            return None  # the reference the floor is measured from
        device, me = mine.get("device"), trial.number
        others = [(number, point) for number, point, where in
                  self.points_at(study, level, recorded=self._recording(study))
                  if number != me and where == device]  # own: ``own`` is newer
        points = [own, *(point for _, point in others)]
        numbers = [me, *(number for number, _ in others)]
        n = len(points)
        if n < self.min_trials_at_rung:
            return None
        why = judge(points, numbers, self._worth(study, points, device), self.eta)
        return None if why is None else f"rung {level:g} {self.resource}: {why}"

    def _worth(self, study: optuna.Study, points: Sequence[Point], device: Any) -> list[bool]:
        """Whether each point is at or above the floor for its seconds (``Floor.at``)."""
        if self.floor is None or self.floor.off:
            return [True] * len(points)
        baseline = self._baseline(study, device)
        if baseline is None:
            return [True] * len(points)
        limits = self.floor.at_each(baseline.user_attrs.get("curve") or [],
                                    [sec for _, sec in points],
                                    floors.baseline_accuracy(baseline))
        return [limit is None or acc >= limit for (acc, _), limit in
                zip(points, limits, strict=True)]

    def _baseline(self, study: optuna.Study, device: Any) -> FrozenTrial | None:
        """The baseline trial on ``device`` (``floors.find_baseline``; one still waiting
        has no curve, so it sets no floor), kept once it completed: its curve is final
        then."""
        place = (id(study._storage), study._study_id, device)
        if place not in self._baselines:
            t = floors.find_baseline(study, device)
            if t is None or t.state != TrialState.COMPLETE:
                return t
            self._baselines[place] = t
        return self._baselines[place]

    def _recording(self, study: optuna.Study) -> bool:
        """Whether every trial of ``study`` records its rung points (:data:`RECORDED`,
        set when the study is made). A study made by an earlier version, or by hand, is
        read the straightforward way: every competing trial's curve."""
        place = (id(study._storage), study._study_id)
        if place not in self._recorded:
            attrs = study._storage.get_study_system_attrs(study._study_id)
            self._recorded[place] = bool(attrs.get(RECORDED))
        return self._recorded[place]

    def _rung(self, study: optuna.Study, level: float) -> _Rung:
        place = (id(study._storage), study._study_id, level)
        if place not in self._rungs:
            self._rungs[place] = _Rung(self.key(level))
        return self._rungs[place]

    def points_at(self, study: optuna.Study, level: float, *, recorded: bool
                  ) -> list[tuple[int, Point, Any]]:
        """``(number, point, device)`` of every competing trial that reached rung
        ``level``: from the rung records, or (``recorded=False``) from every competing
        trial's stored curve. Both give the same points on a recording study (tested)."""
        if recorded:
            return self._rung(study, level).read(study)
        out = []
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False,
                                               states=_COMPETING_STATES):
            point = point_at(t.user_attrs.get("curve") or [], level, self.resource)
            if point is not None:
                out.append((t.number, point, t.user_attrs.get("device")))
        return out


class _Rung:
    """The points recorded at one rung, as this process has read them so far.

    A finished trial never changes (Optuna refuses to update one), so the points of the
    trials below ``horizon`` (every one of them finished when last read) are kept, and
    each read asks only for the trials from the horizon on: those started since, or
    still running. With a few workers that is a few trials, however large the study;
    a process reads a rung's whole history once, at its first decision there.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.horizon = 0  # trial ids below it: finished and read
        self.kept: list[tuple[int, Point, Any]] = []  # (number, point, device) below it

    def read(self, study: optuna.Study) -> list[tuple[int, Point, Any]]:
        rows = queries.system_attr(study, self.key, since=self.horizon)
        unfinished = [tid for tid, _, state, _ in rows if not state.is_finished()]
        horizon = min(unfinished) if unfinished else rows[-1][0] + 1 if rows else self.horizon
        recent = []
        for tid, number, state, value in rows:
            if state not in _COMPETING_STATES or value is None:
                continue  # failed or waiting, no record yet, or voided (see forget)
            entry = (number, (value[0], value[1]), value[2])
            (self.kept if tid < horizon else recent).append(entry)
        self.horizon = horizon
        return self.kept + recent


RECORDED = f"{queries.PRIVATE}rungs"  # study system attribute: its trials record rungs


def start_recording(study: optuna.Study) -> None:
    """Mark a new study (before its first trial) as one whose trials record their rung
    points, so the pruner reads those instead of every trial's curve."""
    study._storage.set_study_system_attr(study._study_id, RECORDED, True)


def judge(points: Sequence[Point], numbers: Sequence[int], worth: Sequence[bool],
          eta: int) -> str | None:
    """Why ``points[0]`` stops at its rung, or None: it continues if it is on the front
    of the points worth having, or among the top ``keeps(n, eta)`` in :func:`order`.

    Its place in that order is the number of points ahead of it, and every point that
    dominates it in its group (and, below the floor, every point worth having) is ahead.
    When those alone fill the top, it stops without ranking the rest: counted in one
    pass, where a full ranking of a 10,000-trial rung takes tens of milliseconds. The
    reason says which: "dominated by D of n", "behind at least A of n" (below the floor:
    the points above it and those dominating it) or "ranked P of n".
    """
    n, kept = len(points), keeps(len(points), eta)
    xy, group = np.asarray(points, dtype=float), np.asarray(worth, dtype=bool)
    (acc, sec), w = xy[0], group[0]
    dominates_own = ((xy[:, 0] >= acc) & (xy[:, 1] <= sec)
                     & ((xy[:, 0] > acc) | (xy[:, 1] < sec)))
    dominating = int(np.count_nonzero(dominates_own & (group == w)))
    if w and dominating == 0:
        return None  # on the front of the points worth having
    tail = f"(keeps the front and the top {kept} at eta={eta})"
    where = "dominated" if w else "below the accuracy floor"
    above = 0 if w else int(np.count_nonzero(group))  # below the floor: all worth having
    if above + dominating >= kept:
        if worth[0]:
            return f"dominated by {dominating} of {n} {tail}"
        return f"{where}, behind at least {above + dominating} of {n} {tail}"
    position = place(points, numbers, worth)
    if position < kept:
        return None
    return f"{where}, ranked {position + 1} of {n} {tail}"


def make_pruner(spec: dict[str, Any], floor: floors.Floor | None = None) -> Any:
    """Our ParetoSuccessiveHalving for pareto studies (ranking against ``floor``),
    Optuna's pruners for time-to-accuracy; ``none`` is None. Bad options are a
    UserError."""
    options = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "pareto-sha":
        options["floor"] = floor
    makers = {"pareto-sha": ParetoSuccessiveHalving, "none": optuna.pruners.NopPruner,
              "median": optuna.pruners.MedianPruner,
              "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
              "hyperband": optuna.pruners.HyperbandPruner,
              "wilcoxon": optuna.pruners.WilcoxonPruner}
    if spec["name"] not in makers:
        raise UserError(f"pruner: unknown pruner, got {spec['name']!r}")
    try:
        pruner = makers[spec["name"]](**options)
    except (TypeError, ValueError) as e:
        raise UserError(f"pruner: {e}") from None
    return None if spec["name"] == "none" else pruner
