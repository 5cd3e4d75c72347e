"""The light reads (search/tuning/queries.py) answer as Optuna's own API does, on SQLite,
PostgreSQL, a journal file and in memory; and the pruner reading rung records decides as
the straightforward full read of every curve does, on a large study."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search.tuning import floor as floors
from search.tuning import queries
from search.tuning.pruning import (
    ParetoSuccessiveHalving,
    _dominates,
    hypervolume_contributions,
    keeps,
    point_at,
    reference_point,
    start_recording,
)
from search.tuning.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(params=["sqlite", "postgresql", "journal", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db"
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    if request.param == "journal":
        return f"journal://{tmp_path}/q.journal"
    return None


def new_study(url: str | None) -> optuna.Study:
    storage = open_storage(url) if url else None
    return optuna.create_study(storage=storage, directions=["maximize", "minimize"])


def mixed(study: optuna.Study) -> None:
    """Trials in every state, every kind of param, infinite values, constraints, curves."""
    dists = {"lr": FloatDistribution(1e-4, 1.0, log=True), "depth": IntDistribution(1, 4),
             "opt": CategoricalDistribution(["sgd", "adam", None])}
    rng = random.Random(0)
    for i in range(40):
        state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][i % 3]
        values = [rng.random(), [rng.random(), math.inf][i % 5 == 0]] if i % 3 == 0 else None
        study.add_trial(create_trial(
            state=state, values=values,
            params={"lr": 10 ** -rng.uniform(0, 4), "depth": rng.randint(1, 4),
                    "opt": ["sgd", "adam", None][i % 3]},
            distributions=dists,
            user_attrs={"curve": [{"epoch": 1, "seconds": 0.5, "accuracy": 0.3}],
                        "worker": f"w{i % 2}", "baseline": i == 3, "traceback": "x" * 50,
                        "outcome": "pruned" if i % 2 else "completed"},
            system_attrs={"constraints": [0.0, -1.0], "search:rung:epochs:1": [0.1, 2, "d", 0]}))
    running = study.ask({"lr": dists["lr"]})
    running.set_user_attr("worker", "w0")
    study.enqueue_trial({"lr": 0.01}, user_attrs={"baseline": True})


def test_trials_equal_optunas_read_less_what_was_skipped(url: str | None) -> None:
    study = new_study(url)
    mixed(study)
    theirs = study._storage.get_all_trials(study._study_id, deepcopy=False)
    ours = queries.trials(study, skip=("traceback",))
    assert [t.number for t in ours] == sorted(t.number for t in theirs)
    by_number = {t.number: t for t in theirs}
    for t in ours:
        expected = by_number[t.number]
        assert t.state == expected.state and t._trial_id == expected._trial_id
        assert t.values == expected.values
        assert t.params == expected.params and t.distributions == expected.distributions
        assert t.datetime_start == expected.datetime_start
        assert t.datetime_complete == expected.datetime_complete
        assert t.user_attrs == {k: v for k, v in expected.user_attrs.items() if k != "traceback"}
        assert t.system_attrs == {k: v for k, v in expected.system_attrs.items()
                                  if not k.startswith("search:")}
        assert t.constraints == expected.constraints
    complete = queries.trials(study, states=(TrialState.COMPLETE,))
    assert [t.number for t in complete] == [t.number for t in ours
                                            if t.state == TrialState.COMPLETE]


def test_counts_equal_optunas(url: str | None) -> None:
    study = new_study(url)
    mixed(study)
    theirs = study.get_trials(deepcopy=False)
    assert queries.states(study) == Counter(t.state for t in theirs)
    assert queries.count(study, FINISHED) == sum(t.state in FINISHED for t in theirs)
    assert queries.count(study, FINISHED, below=20) == sum(
        t.state in FINISHED and t.number < 20 for t in theirs)
    assert queries.count_by(study, FINISHED, "worker", "w1") == sum(
        t.state in FINISHED and t.user_attrs.get("worker") == "w1" for t in theirs)
    assert queries.flagged(study, "baseline") == [t._trial_id for t in theirs
                                                  if t.user_attrs.get("baseline")]
    by_id = sorted(theirs, key=lambda t: t._trial_id)
    rows = queries.system_attr(study, "search:rung:epochs:1")
    assert rows == [(t._trial_id, t.number, t.state, t.system_attrs.get("search:rung:epochs:1"))
                    for t in by_id]
    since = by_id[10]._trial_id
    assert queries.system_attr(study, "search:rung:epochs:1", since=since) == rows[10:]


# --- the pruner: rung records against the full read ---------------------------------------

def reference(study: optuna.Study, pruner: ParetoSuccessiveHalving, number: int,
              curve: list[dict[str, Any]]) -> str | None:
    """The decision written out the straightforward way: every competing trial's stored
    curve, all pairs compared for the fronts, the floor from the baseline's curve."""
    level = pruner._rung_crossed(curve)
    if level is None:
        return None
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    me = next(t for t in trials if t.number == number)
    if me.user_attrs.get("baseline"):
        return None
    device = me.user_attrs.get("device")
    points, numbers = [point_at(curve, level, pruner.resource)], [number]
    for t in trials:
        p = point_at(t.user_attrs.get("curve") or [], level, pruner.resource)
        if t.number != number and t.user_attrs.get("device") == device and p is not None:
            points.append(p)
            numbers.append(t.number)
    n = len(points)
    if n < pruner.min_trials_at_rung:
        return None
    base = floors.baseline_trial(trials, device)
    worth = [True] * n
    if base is not None:
        final = floors.baseline_accuracy(base)
        worth = [(lim := pruner.floor.at(base.user_attrs["curve"], s, final)) is None or a >= lim
                 for a, s in points]
    if worth[0] and not any(worth[i] and _dominates(points[i], points[0]) for i in range(n)):
        return None
    kept = keeps(n, pruner.eta)
    tail = f"(keeps the front and the top {kept} at eta={pruner.eta})"
    head = f"rung {level:g} {pruner.resource}: "
    dominating = sum(worth[i] == worth[0] and _dominates(points[i], points[0])
                     for i in range(n))
    above = 0 if worth[0] else sum(worth)
    if above + dominating >= kept:  # surely outside the top: said without a full ranking
        return head + (f"dominated by {dominating} of {n} {tail}" if worth[0] else
                       f"below the accuracy floor, behind at least {above + dominating} "
                       f"of {n} {tail}")
    key = {}
    for group in (True, False):
        members = [i for i in range(n) if worth[i] == group]
        if not members:
            continue
        ref = reference_point([points[i] for i in members])
        left, rank = set(members), 0
        while left:
            front = [i for i in left if not any(_dominates(points[j], points[i])
                                                for j in left if j != i)]
            areas = hypervolume_contributions([points[i] for i in front], ref)
            for i, area in zip(front, areas, strict=True):
                key[i] = (not group, rank, -area, numbers[i])
            left -= set(front)
            rank += 1
    position = sorted(range(n), key=key.__getitem__).index(0)
    if position < kept:
        return None
    where = "below the accuracy floor" if not worth[0] else "dominated"
    return head + f"{where}, ranked {position + 1} of {n} {tail}"


def synthetic_curve(rng: random.Random, epochs: int, schedule: int) -> list[dict[str, Any]]:
    speed, ceiling = rng.uniform(0.05, 1.0), rng.uniform(0.5, 0.99)
    out, acc = [], 0.0
    for e in range(1, epochs + 1):
        acc = max(acc * rng.uniform(0.97, 1.0), ceiling * (1 - 0.6 ** e) + rng.gauss(0, 0.02))
        out.append({"epoch": e, "seconds": round(e * speed, 3), "accuracy": round(acc, 2),
                    "loss": 1.0, "fraction": e / schedule})
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rung_records_decide_as_the_full_read_of_every_curve(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path}/big.db" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    study = new_study(url)
    start_recording(study)
    pruner = ParetoSuccessiveHalving(eta=3, min_resource=1 / 9, resource="fraction",
                                     floor=floors.Floor(below_baseline=0.05))
    rng = random.Random(1)
    devices = ["cpu:a", "cpu:a", "cpu:a", "cpu:b"]
    # Finished trials, added as a study's history: their rung records written as the
    # objective writes them, and rounded points, so equal points and ties occur.
    history = []
    for i in range(1200):
        schedule = rng.choice([3, 9, 9])
        curve = synthetic_curve(rng, rng.randint(1, schedule), schedule)
        device = devices[i % 4]
        attrs = {"curve": curve, "device": device, "baseline": i in (0, 3)}
        records = {}
        for level in (1 / 9, 1 / 3, 1.0):
            p = point_at(curve, level, "fraction")
            if p is not None:
                records[pruner.key(level)] = [*p, device, i in (0, 3)]
        best = max(curve, key=lambda e: e["accuracy"])
        history.append(create_trial(state=TrialState.COMPLETE, user_attrs=attrs,
                                    system_attrs=records,
                                    values=[best["accuracy"], best["seconds"]]))
    study.add_trials(history)
    decisions: Counter[str] = Counter()
    for _ in range(30):  # new trials, epoch by epoch, as the objective runs them
        trial = study.ask()
        device = rng.choice(devices)
        trial.set_user_attr("device", device)
        schedule = 9
        full = synthetic_curve(rng, schedule, schedule)
        for epoch in range(1, schedule + 1):
            curve = full[:epoch]
            trial.set_user_attr("curve", curve)
            pruner.record(study, trial, curve, device=device)
            ours = pruner.prune(study, trial, curve)
            assert ours == reference(study, pruner, trial.number, curve)
            if pruner._rung_crossed(curve) is not None:
                decisions["kept" if ours is None else ours.split(":")[1].split(" of ")[0]] += 1
            if ours:
                break
        study.tell(trial, [max(e["accuracy"] for e in curve), curve[-1]["seconds"]])
    # Each way of deciding was taken: kept, stopped without ranking, stopped by rank.
    assert decisions["kept"] >= 5, decisions
    assert sum(v for k, v in decisions.items() if "dominated by" in k) >= 3, decisions
    assert sum(v for k, v in decisions.items() if "ranked" in k) >= 1, decisions
