from __future__ import annotations

import itertools
import math
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.tuning.floor import Floor
from search.tuning.pruning import (
    ParetoSuccessiveHalving,
    hypervolume_contributions,
    keeps,
    nondominated_ranks,
    order,
    point_at,
    reference_point,
    rungs,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def curve(*points: tuple[float, float]) -> list[dict[str, Any]]:
    """A curve with one (accuracy, cumulative seconds) point per epoch, epochs from 1."""
    return [{"epoch": i, "seconds": s, "accuracy": a, "loss": 1.0 - a}
            for i, (a, s) in enumerate(points, start=1)]


def rising(final: tuple[float, float], epochs: int) -> list[dict[str, Any]]:
    """A curve whose accuracy and seconds grow linearly to ``final`` at ``epochs``."""
    return curve(*[(final[0] * e / epochs, final[1] * e / epochs) for e in range(1, epochs + 1)])


def study() -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"])


def add(s: optuna.Study, c: list[dict[str, Any]], state: TrialState = TrialState.COMPLETE,
        system_attrs: dict[str, Any] | None = None, **attrs: Any) -> None:
    values = [max(e["accuracy"] for e in c), c[-1]["seconds"]] if state == TrialState.COMPLETE \
        else None
    s.add_trial(create_trial(state=state, values=values, user_attrs={"curve": c, **attrs},
                             system_attrs=system_attrs))


# --- nondominated_ranks -------------------------------------------------------------------

def test_nondominated_ranks_hand_computed() -> None:
    # (0.9, 10) and (0.8, 5) trade off; (0.8, 10) loses to both; (0.7, 20) loses to all.
    points = [(0.9, 10.0), (0.8, 5.0), (0.8, 10.0), (0.7, 20.0)]
    assert nondominated_ranks(points) == [0, 0, 1, 2]


def test_nondominated_ranks_equal_points_share_a_front() -> None:
    points = [(0.9, 10.0), (0.9, 10.0), (0.8, 10.0)]
    assert nondominated_ranks(points) == [0, 0, 1]


def test_nondominated_ranks_better_in_one_objective_only_dominates() -> None:
    # Equal accuracy, fewer seconds: dominates. Equal seconds, more accuracy: dominates.
    assert nondominated_ranks([(0.8, 10.0), (0.8, 9.0)]) == [1, 0]
    assert nondominated_ranks([(0.8, 10.0), (0.9, 10.0)]) == [1, 0]


def test_nondominated_ranks_empty() -> None:
    assert nondominated_ranks([]) == []


def test_nondominated_ranks_equal_the_pairwise_peeling_of_fronts() -> None:
    """The O(n log n) layering against its definition: peel off the non-dominated points,
    all pairs compared, again and again; with many equal accuracies and seconds."""
    import random

    from search.tuning.pruning import _dominates

    def peeled(points: list[tuple[float, float]]) -> list[int]:
        ranks, left, rank = [0] * len(points), set(range(len(points))), 0
        while left:
            front = {i for i in left
                     if not any(_dominates(points[j], points[i]) for j in left if j != i)}
            for i in front:
                ranks[i] = rank
            left, rank = left - front, rank + 1
        return ranks

    rng = random.Random(0)
    for _ in range(2000):
        points = [(rng.choice([0.5, 0.7, rng.random()]), rng.choice([1.0, 2.0, 3 * rng.random()]))
                  for _ in range(rng.randint(1, 25))]
        assert nondominated_ranks(points) == peeled(points), points


# --- hypervolume contributions -----------------------------------------------------------

def test_reference_point_lies_beyond_the_worst_point() -> None:
    # Accuracy spread 0.4: 0.04 below the worst accuracy; 1.1 x the slowest seconds.
    assert reference_point([(0.5, 5.0), (0.9, 40.0), (0.7, 10.0)]) == (
        pytest.approx(0.46), pytest.approx(44.0))
    # No spread: at least 0.01 below.
    assert reference_point([(0.8, 5.0)]) == (pytest.approx(0.79), pytest.approx(5.5))


def test_hypervolume_contributions_hand_computed() -> None:
    # Sorted by seconds; reference (0.4, 50). Rectangles between neighbours:
    # (0.5, 5): (10-5) * (0.5-0.4) = 0.5;  (0.6, 10): (20-10) * (0.6-0.5) = 1.0
    # (0.8, 20): (40-20) * (0.8-0.6) = 4.0; (0.9, 40): (50-40) * (0.9-0.8) = 1.0
    front = [(0.5, 5.0), (0.6, 10.0), (0.8, 20.0), (0.9, 40.0)]
    got = hypervolume_contributions(front, (0.4, 50.0))
    assert got == pytest.approx([0.5, 1.0, 4.0, 1.0])


def test_hypervolume_contributions_equal_points_share_their_area() -> None:
    assert hypervolume_contributions([(0.7, 3.0)] * 2, (0.5, 5.0)) == [0.0, 0.0]


def test_the_fast_end_of_a_front_contributes_and_can_rank_first() -> None:
    # Fixed bug (search/tuning/pruning.py, reference_point): the reference sat at the rung's worst
    # accuracy, so the fastest point of a front (its least accurate) had no area and
    # ranked last: the 10x-faster trial 5 was pruned against the baseline (trial 0).
    # Reference (0.93, 0.55): trial 5 has (0.50-0.05) * (0.94-0.93) = 0.0045, trial 0
    # (0.55-0.50) * (0.95-0.94) = 0.0005.
    assert order([(0.94, 0.05), (0.95, 0.50)], [5, 0]) == [0, 1]


# --- order --------------------------------------------------------------------------------

def test_order_front_comes_first() -> None:
    assert order([(0.5, 10.0), (0.9, 5.0)], [0, 1]) == [1, 0]


def test_order_hypervolume_contribution_then_trial_number() -> None:
    front = [(0.5, 5.0), (0.6, 10.0), (0.8, 20.0), (0.9, 40.0)]
    # Reference (0.46, 44): contributions (10-5)*0.04 = 0.2, (20-10)*0.1 = 1.0,
    # (40-20)*0.2 = 4.0, (44-40)*0.1 = 0.4.
    assert order(front, [10, 11, 12, 13]) == [2, 1, 3, 0]


def test_order_points_worth_having_come_before_the_rest() -> None:
    # (0.9, 5) dominates everything but is below the floor: it ranks after the others,
    # which are ranked among themselves first: (0.8, 10) dominates (0.7, 20).
    points = [(0.7, 20.0), (0.9, 5.0), (0.8, 10.0)]
    assert order(points, [0, 1, 2], [True, False, True]) == [2, 0, 1]


def test_order_equal_points_earlier_trial_wins() -> None:
    assert order([(0.8, 10.0), (0.8, 10.0)], [7, 3]) == [1, 0]


def test_order_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length, got 2, 1 and 2"):
        order([(0.8, 10.0), (0.7, 10.0)], [0])


# --- keeps and rungs ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("n", "eta", "kept"),
    [(0, 3, 1), (1, 3, 1), (2, 3, 1), (3, 3, 1), (4, 3, 1), (5, 3, 1), (6, 3, 2), (9, 3, 3),
     (4, 2, 2), (5, 2, 2), (10, 4, 2)],
)
def test_keeps_table(n: int, eta: int, kept: int) -> None:
    assert keeps(n, eta) == kept


def test_keeps_third_of_four_at_eta_3_does_not_continue() -> None:
    # Position 2 (third) of 4 must be pruned: only the first continues.
    assert 2 >= keeps(4, 3)


@pytest.mark.parametrize(
    ("n", "eta", "message"),
    [(-1, 3, "n must be an integer >= 0, got -1"), (4.0, 3, "n must be an integer"),
     (True, 3, "n must be an integer"), (4, 1, "eta must be an integer >= 2, got 1"),
     (4, 2.0, "eta must be an integer >= 2, got 2.0")],
)
def test_keeps_rejects(n: Any, eta: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        keeps(n, eta)


def test_rungs_are_geometric_up_to_max_resource() -> None:
    assert list(rungs(1, 3, 30)) == [1, 3, 9, 27]
    assert list(rungs(1, 3, 27)) == [1, 3, 9, 27]
    assert list(rungs(2.0, 3, 1.0)) == []
    assert list(rungs(0.1, 3, 1.0)) == pytest.approx([0.1, 0.3, 0.9])


def test_rungs_without_max_resource_are_endless() -> None:
    assert list(itertools.islice(rungs(2, 2, None), 5)) == [2, 4, 8, 16, 32]


@pytest.mark.parametrize(
    ("min_resource", "eta", "message"),
    [(0, 3, "min_resource must be a finite number > 0, got 0"), (-1.0, 3, "min_resource"),
     (math.inf, 3, "min_resource"), (math.nan, 3, "min_resource"), (1, 1, "eta must be"),
     (1, 2.5, "eta must be")],
)
def test_rungs_rejects(min_resource: Any, eta: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next(rungs(min_resource, eta, None))


# --- point_at -----------------------------------------------------------------------------

def test_point_at_is_the_point_a_run_stopped_there_would_report() -> None:
    c = curve((0.5, 2.0), (0.7, 4.0), (0.6, 6.0), (0.8, 8.0))
    # Stopped after epoch 3: best 0.7, first reached at the end of epoch 2 (4 s).
    assert point_at(c, 3, "epochs") == (0.7, 4.0)
    assert point_at(c, 2.5, "epochs") == (0.7, 4.0)  # stops at the first entry past it
    assert point_at(c, 1, "epochs") == (0.5, 2.0)
    assert point_at(c, 4, "epochs") == (0.8, 8.0)


def test_point_at_seconds() -> None:
    c = curve((0.5, 2.0), (0.7, 4.0), (0.6, 6.0), (0.8, 8.0))
    assert point_at(c, 5.0, "seconds") == (0.7, 4.0)
    assert point_at(c, 4.0, "seconds") == (0.7, 4.0)
    assert point_at(c, 7.0, "seconds") == (0.8, 8.0)


def test_point_at_not_reached_is_none() -> None:
    c = curve((0.5, 2.0), (0.7, 4.0))
    assert point_at(c, 3, "epochs") is None
    assert point_at(c, 4.5, "seconds") is None
    assert point_at([], 1, "epochs") is None


def test_point_at_rejects_unknown_resource() -> None:
    with pytest.raises(ValueError, match="resource must be one of epochs, seconds, fraction, "
                                         "got 'steps'"):
        point_at(curve((0.5, 2.0)), 1, "steps")


# --- ParetoSuccessiveHalving: arguments ---------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"eta": 1}, "eta must be an integer >= 2, got 1"), ({"eta": 3.0}, "eta must be"),
     ({"eta": True}, "eta must be"), ({"min_resource": 0}, "min_resource must be"),
     ({"min_resource": -2.0}, "min_resource must be"),
     ({"min_resource": math.inf}, "min_resource must be"),
     ({"resource": "steps"}, "resource must be one of epochs, seconds, fraction, got 'steps'"),
     ({"min_trials_at_rung": 0}, "min_trials_at_rung must be an integer >= 1, got 0"),
     ({"min_trials_at_rung": 2.0}, "min_trials_at_rung must be")],
)
def test_pruner_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ParetoSuccessiveHalving(**kwargs)


def test_pruner_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        ParetoSuccessiveHalving(3)  # type: ignore[misc]


# --- ParetoSuccessiveHalving.prune on real studies ----------------------------------------

def rung_3_study() -> optuna.Study:
    """Three trials whose points at epoch 3 are (0.9, 30), (0.8, 20) and (0.7, 25)."""
    s = study()
    add(s, rising((0.9, 30.0), 3))
    add(s, rising((0.8, 20.0), 3))
    add(s, rising((0.7, 25.0), 3), TrialState.PRUNED)
    return s


def ranked(rank: int, n: int = 4, kept: int = 1, eta: int = 3, level: int = 3,
           where: str = "dominated") -> str:
    return (f"rung {level} epochs: {where}, ranked {rank} of {n} (keeps the front and the "
            f"top {kept} at eta={eta})")


def dominated_by(count: int, n: int = 4, kept: int = 1, eta: int = 3, level: int = 3,
                 resource: str = "epochs") -> str:
    return (f"rung {level} {resource}: dominated by {count} of {n} (keeps the front and the "
            f"top {kept} at eta={eta})")


@pytest.mark.parametrize(
    ("own", "count"),
    [((0.75, 22.0), 1),  # dominated by (0.8, 20) only
     ((0.6, 28.0), 2)],  # by (0.8, 20) and (0.7, 25)
)
def test_prune_stops_a_trial_dominated_by_as_many_points_as_the_rung_keeps(
        own: tuple[float, float], count: int) -> None:
    # Every point dominating it ranks ahead of it: with as many as the rung keeps, it is
    # outside the top without ranking the rest.
    s = rung_3_study()
    trial = s.ask()
    assert ParetoSuccessiveHalving(eta=3).prune(s, trial, rising(own, 3)) == \
        dominated_by(count)


@pytest.mark.parametrize(
    "own",
    [(0.85, 25.0),  # between the two front points: ranked 2 of 4, outside the top 1
     (0.6, 15.0),  # the fastest, and the least accurate: the fast end of the front
     (0.95, 10.0)],  # dominates every other point
)
def test_prune_keeps_every_trial_on_the_front(own: tuple[float, float]) -> None:
    s = rung_3_study()
    trial = s.ask()
    assert ParetoSuccessiveHalving(eta=3).prune(s, trial, rising(own, 3)) is None


def test_prune_keeps_the_10x_faster_trial_against_the_baseline() -> None:
    # The case of the issue: a trial 10x faster than the baseline at 0.01 less accuracy.
    s = study()
    add(s, rising((0.95, 0.50), 3), baseline=True)
    trial = s.ask()
    assert ParetoSuccessiveHalving(eta=3).prune(s, trial, rising((0.94, 0.05), 3)) is None


def test_prune_keeps_n_over_eta_beyond_the_front() -> None:
    s = rung_3_study()
    add(s, rising((0.78, 21.0), 3))  # dominated by (0.8, 20); dominates (0.7, 25)
    trial = s.ask()
    # At eta=2, 5 trials keep 2. (0.75, 22) is dominated by (0.8, 20) and (0.78, 21): two
    # points ahead of it for certain, as many as are kept.
    pruner = ParetoSuccessiveHalving(eta=2, min_resource=3)
    assert pruner.prune(s, trial, rising((0.75, 22.0), 3)) == dominated_by(2, 5, 2, 2)
    # Dominated by (0.8, 20) alone, but front 1 comes after both points of front 0: ranked
    # 3rd of 5, outside the top 2 and off the front.
    trial = s.ask()
    assert pruner.prune(s, trial, rising((0.79, 20.5), 3)) == ranked(3, 5, 2, 2)


def test_prune_keeps_a_dominated_trial_within_the_top_n_over_eta() -> None:
    s = rung_3_study()
    for point in [(0.5, 40.0), (0.45, 41.0), (0.4, 42.0), (0.35, 43.0), (0.3, 44.0)]:
        add(s, rising(point, 3))
    trial = s.ask()
    # 9 trials keep 3: front 0 takes two places, (0.75, 22) is third.
    assert ParetoSuccessiveHalving(eta=3).prune(s, trial, rising((0.75, 22.0), 3)) is None


def floor_study() -> optuna.Study:
    """A complete baseline: 0.80 after 1 s, 0.90 after 2 s, 0.95 after 3 s."""
    s = study()
    add(s, curve((0.80, 1.0), (0.90, 2.0), (0.95, 3.0)), baseline=True)
    return s


def test_prune_ranks_a_point_below_the_floor_after_the_others() -> None:
    s = floor_study()
    trial = s.ask()
    pruner = ParetoSuccessiveHalving(eta=3, floor=Floor(below_baseline=0.05))
    # At 2.5 s the baseline was at 0.925 (between 0.90 and 0.95): the floor is 0.875.
    # (0.70, 2.5) is faster than the baseline (non-dominated) but below it.
    assert pruner.prune(s, trial, rising((0.70, 2.5), 3)) == (
        "rung 3 epochs: below the accuracy floor, behind at least 1 of 2 (keeps the front "
        "and the top 1 at eta=3)")
    # Without a floor the same point is on the front and continues.
    assert ParetoSuccessiveHalving(eta=3).prune(s, trial, rising((0.70, 2.5), 3)) is None
    # At or above the rung's floor it is worth having, and on the front.
    assert pruner.prune(s, trial, rising((0.88, 2.5), 3)) is None


def test_prune_floor_compares_at_equal_seconds_not_equal_epochs() -> None:
    s = floor_study()
    trial = s.ask()
    pruner = ParetoSuccessiveHalving(eta=3, floor=Floor(below_baseline=0.05))
    # Three cheap epochs in 0.5 s, half the baseline's first: held to half its accuracy
    # there (0.40), less the margin: 0.35.
    assert pruner.prune(s, trial, rising((0.36, 0.5), 3)) is None
    assert pruner.prune(s, trial, rising((0.34, 0.5), 3)) is not None
    # Between the baseline's epochs, interpolated: 0.85 at 1.5 s, floor 0.80.
    assert pruner.prune(s, trial, rising((0.81, 1.5), 3)) is None
    assert pruner.prune(s, trial, rising((0.79, 1.5), 3)) is not None
    # An absolute floor is shifted by the baseline's final margin: 0.95 - 0.90 = 0.05.
    absolute = ParetoSuccessiveHalving(eta=3, floor=Floor(accuracy=0.90))
    assert absolute.prune(s, trial, rising((0.87, 2.5), 3)) is not None
    assert absolute.prune(s, trial, rising((0.88, 2.5), 3)) is None


def test_prune_never_stops_the_baseline() -> None:
    s = study()
    add(s, rising((0.99, 1.0), 3))
    trial = s.ask()
    trial.set_user_attr("baseline", True)
    assert ParetoSuccessiveHalving(eta=3).prune(s, trial, rising((0.5, 20.0), 3)) is None


def test_prune_counts_running_trials_and_skips_failed_and_unreached() -> None:
    s = study()
    running = s.ask()
    running.set_user_attr("curve", rising((0.9, 10.0), 3))
    add(s, rising((0.95, 5.0), 3), TrialState.FAIL)  # not a competitor
    add(s, rising((0.95, 5.0), 2), TrialState.PRUNED)  # never reached epoch 3
    s.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.1, 1.0]))  # no curve
    trial = s.ask()
    pruner = ParetoSuccessiveHalving(eta=3, min_trials_at_rung=2)
    assert pruner.prune(s, trial, rising((0.5, 20.0), 3)) == dominated_by(1, 2)


def test_prune_waits_for_min_trials_at_rung() -> None:
    s = study()
    add(s, rising((0.9, 10.0), 3))
    trial = s.ask()
    c = rising((0.5, 20.0), 3)
    assert ParetoSuccessiveHalving(eta=3, min_trials_at_rung=3).prune(s, trial, c) is None
    assert ParetoSuccessiveHalving(eta=3, min_trials_at_rung=2).prune(s, trial, c)
    # The default decides from two: a second trial dominated by the first is stopped.
    assert ParetoSuccessiveHalving(eta=3).prune(s, trial, c)


def test_prune_decides_each_rung_once() -> None:
    s = rung_3_study()
    trial = s.ask()
    pruner = ParetoSuccessiveHalving(eta=3)
    c = rising((0.75, 22.0), 3)
    assert pruner.prune(s, trial, c[:2]) is None  # between rungs 1 and 3
    assert pruner.prune(s, trial, c) is not None  # crosses rung 3
    c.append({"epoch": 4, "seconds": 30.0, "accuracy": 0.76, "loss": 0.2})
    assert pruner.prune(s, trial, c) is None  # still before rung 9: decided already


def test_prune_decides_rung_1_at_the_first_epoch() -> None:
    s = study()
    add(s, rising((0.9, 10.0), 3))
    trial = s.ask()
    pruner = ParetoSuccessiveHalving(eta=3, min_trials_at_rung=2)
    assert pruner.prune(s, trial, curve((0.1, 9.0))) == dominated_by(1, 2, level=1)


def test_prune_uses_own_curve_not_the_stored_one() -> None:
    s = rung_3_study()
    trial = s.ask()
    trial.set_user_attr("curve", rising((0.1, 90.0), 3))  # stale or wrong: must be ignored
    assert ParetoSuccessiveHalving(eta=3).prune(s, trial, rising((0.95, 10.0), 3)) is None


def test_prune_by_seconds_decides_the_highest_rung_crossed() -> None:
    s = study()
    add(s, curve((0.5, 3.0), (0.9, 10.0)))  # point at rung 9 seconds: (0.9, 10)
    trial = s.ask()
    pruner = ParetoSuccessiveHalving(eta=3, min_trials_at_rung=2, resource="seconds",
                                     min_resource=1.0)
    # One epoch of 12 seconds crosses rungs 1, 3 and 9 at once; rung 9 is decided.
    reason = pruner.prune(s, trial, curve((0.4, 12.0)))
    assert reason == dominated_by(1, 2, level=9, resource="seconds")


def test_prune_compares_only_trials_on_the_same_device() -> None:
    s = study()
    add(s, rising((0.9, 1.0), 3), device="cuda:NVIDIA H100 80GB HBM3")
    add(s, rising((0.4, 50.0), 3), device="cpu:test")
    trial = s.ask()
    trial.set_user_attr("device", "cpu:test")
    pruner = ParetoSuccessiveHalving(eta=3)
    # Only the cpu trial competes, and this one dominates it.
    assert pruner.prune(s, trial, rising((0.5, 40.0), 3)) is None


def test_a_retried_trial_starts_without_the_rung_records_it_inherited() -> None:
    from search.tuning.pruning import start_recording
    from search.tuning.storage import retry_callback

    s = study()
    start_recording(s)
    add(s, rising((0.9, 10.0), 3), system_attrs={"search:rung:epochs:1": [0.3, 3.3, None, 0]})
    pruner = ParetoSuccessiveHalving(eta=3)
    failed = s.ask()
    pruner.record(s, failed, rising((0.95, 1.0), 3), device=None)  # rung 3: a strong point
    s._storage.set_trial_state_values(failed._trial_id, state=TrialState.FAIL)
    retry_callback()(s, s._storage.get_trial(failed._trial_id))
    retried = s.ask()
    # Optuna's retry copied the records: the new trial would compete at rung 3 already.
    strong = [*point_at(rising((0.95, 1.0), 3), 3, "epochs"), None, False]
    assert s._storage.get_trial(retried._trial_id).system_attrs[pruner.key(3)] == strong
    mine = s.ask()
    pruner.record(s, mine, rising((0.5, 20.0), 3), device=None)
    assert pruner.prune(s, mine, rising((0.5, 20.0), 3)) is not None  # against the copy
    pruner.forget(s, retried)
    assert pruner.points_at(s, 3, recorded=True) == [(mine.number, (0.5, 20.0), None)]
    assert pruner.prune(s, mine, rising((0.5, 20.0), 3)) is None  # alone at rung 3


def test_tpe_keeps_sampling_when_stopped_trials_complete_with_their_points() -> None:
    s = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
    )
    pruner = ParetoSuccessiveHalving(eta=3)
    for _ in range(30):
        trial = s.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        c: list[dict[str, Any]] = []
        for epoch in range(1, 10):
            # More x: less accurate and no faster: most trials are dominated.
            c.append({"epoch": epoch, "seconds": epoch * 1.0,
                      "accuracy": (1.0 - x) * (1.0 - 0.5**epoch), "loss": 1.0})
            trial.set_user_attr("curve", c)
            reason = pruner.prune(s, trial, c)
            if reason is not None:
                trial.set_user_attr("outcome", "pruned")
                trial.set_user_attr("reason", reason)
                break
        s.tell(trial, list(point_at(c, c[-1]["epoch"], "epochs")))
    pruned = [t for t in s.trials if t.user_attrs.get("outcome") == "pruned"]
    assert len(pruned) >= 10
    assert all(t.user_attrs["reason"].startswith("rung ") for t in pruned)
    assert all(t.state == TrialState.COMPLETE for t in s.trials)
    nxt = s.ask()
    assert 0.0 <= nxt.suggest_float("x", 0.0, 1.0) <= 1.0


def test_a_compiled_trial_is_first_judged_after_its_compile_epoch() -> None:
    from search.training.config import TrainConfig
    from search.tuning.objective import judged

    eager, compiled = TrainConfig(epochs=9), TrainConfig(epochs=9, compile=True)
    assert [judged(eager, e) for e in (1, 2, 3, 9)] == [True, True, True, False]
    assert [judged(compiled, e) for e in (1, 2, 3, 9)] == [False, True, True, False]
    # Rung 1 is crossed only at epoch 1, so a compiled trial's first decision is rung 3.
    pruner = ParetoSuccessiveHalving(eta=3)
    assert pruner._rung_crossed(rising((0.5, 3.0), 1)) == 1.0
    assert pruner._rung_crossed(rising((0.5, 3.0), 2)) is None


def test_fraction_rungs_judge_each_run_at_the_same_phase_of_its_schedule() -> None:
    def schedule(accuracies: list[float], epochs: int) -> list[dict[str, Any]]:
        c = curve(*[(a, float(e)) for e, a in enumerate(accuracies, start=1)])
        return [{**entry, "fraction": entry["epoch"] / epochs} for entry in c]

    # A 2-epoch run finished; a 9-epoch one-cycle run warming up is behind it at epoch 1.
    s = study()
    add(s, schedule([0.70, 0.90], 2))
    pruner = ParetoSuccessiveHalving(eta=3, min_resource=1 / 9, resource="fraction")
    long = schedule([0.20, 0.75, 0.90], 9)
    trial = s.ask()
    # Epoch 1 of 9 is rung 1/9, where the 2-epoch run's point is its epoch 1 (0.70 at 1 s):
    # (0.20, 1 s) is dominated there.
    assert pruner.prune(s, trial, long[:1]) is not None
    # At rung 1/3 (epoch 3 of 9) it is compared with the 2-epoch run at epoch 1 of 2
    # (half its schedule, the first entry past 1/3): (0.90, 3 s) vs (0.70, 1 s), a trade-off.
    assert pruner.prune(s, trial, long) is None
    assert point_at(schedule([0.70, 0.90], 2), 1 / 3, "fraction") == (0.70, 1.0)
    assert point_at(curve((0.5, 1.0)), 1 / 3, "fraction") is None  # no fraction stored


def test_fraction_rungs_need_a_minimum_below_one() -> None:
    with pytest.raises(ValueError, match="min_resource must be below 1 with resource fraction"):
        ParetoSuccessiveHalving(min_resource=1, resource="fraction")


def test_place_is_the_position_in_the_full_order() -> None:
    """``place`` ranks only what can be ahead of point 0; the full order agrees, with
    equal points, equal accuracies and points below the floor."""
    import random

    from search.tuning.pruning import place

    rng = random.Random(0)
    for _ in range(2000):
        n = rng.randint(1, 25)
        points = [(rng.choice([0.5, 0.7, round(rng.random(), 2)]),
                   rng.choice([1.0, 2.0, round(3 * rng.random(), 2)])) for _ in range(n)]
        numbers = rng.sample(range(100), n)
        worth = [rng.random() < 0.7 for _ in range(n)]
        assert place(points, numbers, worth) == order(points, numbers, worth).index(0)
