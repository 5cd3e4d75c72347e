from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from search.reviewing import frontier
from search.reviewing.frontier import Point

optuna.logging.set_verbosity(optuna.logging.WARNING)

LR = {"lr": FloatDistribution(1e-4, 1.0, log=True)}

# (accuracy, seconds) by trial number. Front by hand: 4, 1, 5 (a duplicate of 1), 0, 3.
# 2 is dominated by 0, 6 by 4, 7 by 1 (same accuracy, slower).
TABLE = [
    (0.90, 100.0),
    (0.80, 50.0),
    (0.85, 120.0),
    (0.95, 200.0),
    (0.70, 20.0),
    (0.80, 50.0),
    (0.60, 30.0),
    (0.80, 60.0),
]


def _curve(*seconds: float) -> list[dict[str, Any]]:
    return [
        {"epoch": i + 1, "seconds": s, "accuracy": 0.1 * (i + 1), "loss": 1.0}
        for i, s in enumerate(seconds)
    ]


def _complete(acc: float, sec: float, **user_attrs: Any) -> FrozenTrial:
    return create_trial(
        params={"lr": 0.01}, distributions=LR, values=[acc, sec], user_attrs=user_attrs
    )


def _ended(state: TrialState, **user_attrs: Any) -> FrozenTrial:
    return create_trial(state=state, user_attrs=user_attrs)


def _study(trials: list[FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for t in trials:
        study.add_trial(t)
    return study


@pytest.fixture
def table_study() -> optuna.Study:
    return _study([_complete(a, s) for a, s in TABLE])


def _numbers(pts: list[Point]) -> list[int]:
    return [p.number for p in pts]


def test_points_keep_complete_trials_with_their_attributes() -> None:
    study = _study(
        [
            _complete(0.9, 10.0, outcome="early-stopped", device="cuda:H100"),
            _ended(TrialState.PRUNED, outcome="pruned"),
            _complete(0.8, 5.0),
            _ended(TrialState.FAIL),
        ]
    )
    pts = frontier.points(study.trials)
    assert pts == [
        Point(0, 0.9, 10.0, {"lr": 0.01}, "early-stopped", "cuda:H100"),
        Point(2, 0.8, 5.0, {"lr": 0.01}, "completed", "unknown"),
    ]
    assert pts[0].params == {"lr": 0.01}


def test_points_filter_by_device() -> None:
    study = _study(
        [
            _complete(0.9, 10.0, device="cuda:H100"),
            _complete(0.8, 5.0, device="cpu:EPYC"),
            _complete(0.7, 4.0),
        ]
    )
    assert _numbers(frontier.points(study.trials, device="cuda:H100")) == [0]
    assert _numbers(frontier.points(study.trials, device="unknown")) == [2]
    assert frontier.points(study.trials, device="tpu") == []


def test_points_of_time_to_accuracy_study_take_accuracy_from_result() -> None:
    study = optuna.create_study(direction="minimize")
    study.add_trial(create_trial(value=3.0, user_attrs={"result": {"accuracy": 0.97}}))
    (point,) = frontier.points(study.trials)
    assert (point.accuracy, point.seconds) == (0.97, 3.0)


def test_points_reject_three_objectives() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trial(create_trial(values=[0.9, 3.0, 1.0]))
    with pytest.raises(ValueError, match="trial 0: expected values"):
        frontier.points(study.trials)


def test_devices_most_trials_first() -> None:
    study = _study(
        [
            _complete(0.9, 1.0, device="cpu:EPYC"),
            _complete(0.9, 1.0, device="cuda:H100"),
            _ended(TrialState.PRUNED, device="cuda:H100"),
            _complete(0.9, 1.0, device="cuda:H100"),
            _complete(0.9, 1.0),
            _ended(TrialState.FAIL),
        ]
    )
    assert frontier.devices(study.trials) == ["cuda:H100", "unknown", "cpu:EPYC"]


def test_pareto_front_members_sorted_by_seconds(table_study: optuna.Study) -> None:
    front = frontier.pareto_front(frontier.points(table_study.trials))
    assert _numbers(front) == [4, 1, 5, 0, 3]
    assert [p.seconds for p in front] == [20.0, 50.0, 50.0, 100.0, 200.0]


def test_pareto_front_of_nothing_is_empty() -> None:
    assert frontier.pareto_front([]) == []


def test_step_line_coordinates(table_study: optuna.Study) -> None:
    xs, ys = frontier.step_line(frontier.points(table_study.trials))
    assert xs == [20.0, 50.0, 50.0, 100.0, 100.0, 200.0, 200.0]
    assert ys == [0.70, 0.70, 0.80, 0.80, 0.90, 0.90, 0.95]


def test_step_line_extends_until_budget() -> None:
    xs, ys = frontier.step_line([Point(0, 0.5, 10.0), Point(1, 0.6, 20.0)], until=30.0)
    assert xs == [10.0, 20.0, 20.0, 30.0]
    assert ys == [0.5, 0.5, 0.6, 0.6]
    with pytest.raises(ValueError, match="until must be >="):
        frontier.step_line([Point(0, 0.5, 10.0)], until=5.0)


def test_step_line_of_nothing_is_empty() -> None:
    assert frontier.step_line([]) == ([], [])


def test_knee_on_hand_computed_front(table_study: optuna.Study) -> None:
    # Scaled (accuracy' - seconds') over the front: 4 -> 0, 1 -> 0.4 - 1/6 = 0.233,
    # 0 -> 0.8 - 4/9 = 0.356, 3 -> 0.
    assert frontier.knee(frontier.points(table_study.trials)).number == 0


def test_knee_of_small_front_is_most_accurate() -> None:
    assert frontier.knee([Point(0, 0.5, 10.0)]).number == 0
    assert frontier.knee([Point(0, 0.5, 10.0), Point(1, 0.9, 50.0)]).number == 1


def test_knee_without_bend_above_line_is_most_accurate() -> None:
    # The middle point lies below the line between the extremes: a worse trade-off.
    front = [Point(0, 0.5, 10.0), Point(1, 0.6, 90.0), Point(2, 0.9, 100.0)]
    assert frontier.knee(front).number == 2


def test_knee_of_empty_front_raises() -> None:
    with pytest.raises(ValueError, match="empty front"):
        frontier.knee([])


def test_fastest_reaching(table_study: optuna.Study) -> None:
    pts = frontier.points(table_study.trials)
    assert frontier.fastest_reaching(pts, 0.8).number == 1  # 1 and 5 tie: lower number
    assert frontier.fastest_reaching(pts, 0.9).number == 0
    assert frontier.fastest_reaching(pts, 0.99) is None


def test_fastest_reaching_tie_prefers_higher_accuracy() -> None:
    pts = [Point(0, 0.85, 50.0), Point(1, 0.90, 50.0)]
    assert frontier.fastest_reaching(pts, 0.8).number == 1


def test_most_accurate_within(table_study: optuna.Study) -> None:
    pts = frontier.points(table_study.trials)
    assert frontier.most_accurate_within(pts, 60.0).number == 1  # 1 and 5 tie: lower number
    assert frontier.most_accurate_within(pts, 150.0).number == 0
    assert frontier.most_accurate_within(pts, 10.0) is None


def test_most_accurate_within_tie_prefers_fewer_seconds() -> None:
    pts = [Point(0, 0.9, 40.0), Point(1, 0.9, 30.0)]
    assert frontier.most_accurate_within(pts, 60.0).number == 1


def test_hypervolume_hand_computed(table_study: optuna.Study) -> None:
    pts = frontier.points(table_study.trials)
    # Attained accuracy x seconds from 20 to 220: .7*30 + .8*50 + .9*100 + .95*20.
    assert frontier.hypervolume(pts, (0.0, 220.0)) == pytest.approx(170.0)
    # Only 1, 5, 0 (and dominated 2) lie inside: .05*50 + .15*50.
    assert frontier.hypervolume(pts, (0.75, 150.0)) == pytest.approx(10.0)


def test_hypervolume_of_nothing_inside_reference_is_zero() -> None:
    assert frontier.hypervolume([], (0.0, 1.0)) == 0.0
    assert frontier.hypervolume([Point(0, 0.5, 10.0)], (0.5, 20.0)) == 0.0
    assert frontier.hypervolume([Point(0, 0.5, 10.0)], (0.0, 10.0)) == 0.0


def test_hypervolume_rejects_bad_reference() -> None:
    with pytest.raises(ValueError, match="reference must be two finite numbers"):
        frontier.hypervolume([Point(0, 0.5, 10.0)], (0.0, float("inf")))


def test_hypervolume_matches_optuna(table_study: optuna.Study) -> None:
    np = pytest.importorskip("numpy")
    hv = pytest.importorskip("optuna._hypervolume")
    pts = frontier.points(table_study.trials)
    loss = np.array([[-p.accuracy, p.seconds] for p in pts])
    expected = hv.compute_hypervolume(loss, np.array([0.0, 220.0]))
    assert frontier.hypervolume(pts, (0.0, 220.0)) == pytest.approx(expected)


def test_default_reference() -> None:
    assert frontier.default_reference([Point(0, 0.5, 10.0), Point(1, 0.9, 50.0)]) == (
        0.0,
        pytest.approx(55.0),
    )
    with pytest.raises(ValueError, match="no points"):
        frontier.default_reference([])


def test_hypervolume_history_counts_all_spent_seconds() -> None:
    study = _study(
        [
            _complete(0.7, 20.0, curve=_curve(20.0, 25.0)),  # ran an epoch past its best
            _ended(TrialState.PRUNED, curve=_curve(4.0, 10.0)),
            _complete(0.8, 50.0),  # no curve: its values[1]
            _ended(TrialState.FAIL),  # failed before an epoch: no cost
            _ended(TrialState.FAIL, curve=_curve(5.0)),
            _complete(0.6, 30.0, curve=_curve(30.0)),  # dominated
            _ended(TrialState.RUNNING, curve=_curve(7.0)),  # not finished: left out
        ]
    )
    history = frontier.hypervolume_history(study.trials, (0.0, 100.0))
    assert [(n, s) for n, s, _ in history] == [
        (0, 25.0),
        (1, 35.0),
        (2, 85.0),
        (3, 85.0),
        (4, 90.0),
        (5, 120.0),
    ]
    # .7*80 = 56, then .7*30 + .8*50 = 61 once trial 2 joins the front.
    assert [hv for _, _, hv in history] == pytest.approx([56.0, 56.0, 61.0, 61.0, 61.0, 61.0])


def test_hypervolume_history_is_monotone(table_study: optuna.Study) -> None:
    history = frontier.hypervolume_history(table_study.trials, (0.0, 220.0))
    values = [hv for _, _, hv in history]
    assert values == sorted(values)
    assert values[-1] == pytest.approx(170.0)


def test_hypervolume_history_filters_device() -> None:
    study = _study(
        [
            _complete(0.7, 20.0, device="a"),
            _complete(0.9, 10.0, device="b"),
            _ended(TrialState.PRUNED, device="a", curve=_curve(3.0)),
        ]
    )
    history = frontier.hypervolume_history(study.trials, (0.0, 100.0), device="a")
    assert history == [(0, 20.0, pytest.approx(56.0)), (2, 23.0, pytest.approx(56.0))]


def test_outcome_counts_fall_back_to_state() -> None:
    study = _study(
        [
            _complete(0.9, 1.0, outcome="early-stopped"),
            _complete(0.9, 1.0),
            _ended(TrialState.PRUNED, outcome="pruned"),
            _ended(TrialState.PRUNED),
            _ended(TrialState.FAIL, outcome="oom"),
            _ended(TrialState.FAIL),
            _ended(TrialState.RUNNING),
            _ended(TrialState.WAITING),
        ]
    )
    counts = frontier.outcome_counts(study.trials)
    assert counts == {
        "pruned": 2,
        "completed": 1,
        "early-stopped": 1,
        "failed": 1,
        "oom": 1,
        "running": 1,
        "waiting": 1,
    }
    assert list(counts)[0] == "pruned"


def test_curves_of_given_trials() -> None:
    study = _study(
        [
            _complete(0.9, 1.0, curve=_curve(1.0, 2.0)),
            _ended(TrialState.PRUNED, curve=_curve(3.0)),
            _ended(TrialState.FAIL),
        ]
    )
    got = frontier.curves(study.trials, [1, 2])
    assert got == {1: _curve(3.0), 2: []}
    with pytest.raises(ValueError, match="no trial with number 9"):
        frontier.curves(study.trials, [0, 9])


# -- the accuracy floor ----------------------------------------------------------------------


def test_points_below_the_floor_never_enter_the_front_or_the_hypervolume() -> None:
    trials = _study([_complete(a, s) for a, s in TABLE]).trials
    # Floor 0.75: trials 4 (0.70) and 6 (0.60) are below it, and 4 was the fastest front point.
    kept = frontier.points(trials, floor=0.75)
    assert _numbers(kept) == [0, 1, 2, 3, 5, 7]
    assert _numbers(frontier.pareto_front(kept)) == [1, 5, 0, 3]
    assert [frontier.below_floor(t, 0.75) for t in trials] == [
        False, False, False, False, True, False, True, False]
    assert not any(frontier.below_floor(t, None) for t in trials)
    history = frontier.hypervolume_history(trials, (0.0, 300.0), floor=0.75)
    # Trial 4 adds its cost but no area: the hypervolume is flat there.
    assert history[4][2] == history[3][2]
    assert history[-1][2] == pytest.approx(frontier.hypervolume(kept, (0.0, 300.0)))


def test_a_stopped_trial_that_completed_with_its_point_is_on_the_front() -> None:
    stopped = _complete(0.75, 10.0, outcome="pruned")
    pts = frontier.points(_study([*(_complete(a, s) for a, s in TABLE), stopped]).trials)
    fastest = frontier.pareto_front(pts)[0]
    assert (fastest.number, fastest.accuracy, fastest.seconds) == (8, 0.75, 10.0)
    assert fastest.outcome == "pruned"
