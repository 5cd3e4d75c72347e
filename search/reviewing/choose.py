"""Choosing one config from a study: by accuracy floor, time budget, knee, or number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError
from search.reviewing import frontier


def _existing(name: str, storage: str) -> optuna.storages.BaseStorage:
    """The storage holding study ``name``; a name that is not there is a UserError listing
    those that are."""
    from search.tuning.storage import mask_url, open_storage

    store = open_storage(storage, must_exist=True)
    names = optuna.get_all_study_names(store)
    if name not in names:
        raise UserError(f"no study named {name!r} in {mask_url(storage)} "
                        f"(studies: {', '.join(names) or 'none'})")
    return store


def load_study(name: str, storage: str) -> optuna.Study:
    """An existing study."""
    return optuna.load_study(study_name=name, storage=_existing(name, storage))


def read(study: optuna.Study, *, states: tuple[TrialState, ...] | None = None,
         curves: bool = True) -> list[FrozenTrial]:
    """The trials a review command looks at, read once per command, without their
    tracebacks (and learning curves unless ``curves``): ``search/tuning/queries.py``,
    seconds faster than Optuna's read on a large study."""
    from search.tuning import queries

    return queries.trials(study, states=states,
                          skip=("traceback",) if curves else ("traceback", "curve"))


def load_complete(name: str, storage: str) -> tuple[optuna.Study, list[FrozenTrial]]:
    """An existing study and its COMPLETE trials with what choosing needs (values,
    outcome, device, result), read without the others and without their params, curves
    and configs: :func:`whole` reads those of the one chosen."""
    from search.tuning import queries

    study = load_study(name, storage)
    return study, queries.trials(study, states=(TrialState.COMPLETE,), params=False,
                                 skip=("traceback", "curve", "config"))


def measured(trial: FrozenTrial) -> dict[str, Any]:
    """A finished trial's config fields, set to stop where its point was measured: the end
    of its best epoch (``stop_after``), the schedule laid out over its ``epochs``. A plain
    mapping, so printing a choice needs no torch (``export.measured_config`` types it)."""
    params = dict(trial.user_attrs["config"])
    best_epoch = (trial.user_attrs.get("result") or {}).get("best_epoch")
    if best_epoch:
        params["stop_after"] = best_epoch
    return params


def stopping(params: dict[str, Any]) -> str:
    """Where a measured point stops, in words: "stop after epoch 3 of 10"."""
    return f"stop after epoch {params.get('stop_after') or params['epochs']} of {params['epochs']}"


def whole(study: optuna.Study, trial: FrozenTrial) -> FrozenTrial:
    """Every record of one trial (Optuna's own read)."""
    return study._storage.get_trial(trial._trial_id)


def device_of(trials: Sequence[FrozenTrial], device: str | None) -> tuple[str | None, str]:
    """The device key to look at (default: the one with most feasible trials) and a note
    when the trials come from several devices: fronts never mix hardware."""
    keys = frontier.devices([t for t in trials if frontier.feasible(t)])
    if device is not None and device not in keys:
        raise UserError(f"--device-key: no completed trials on {device!r} "
                        f"(devices: {', '.join(keys) or 'none'})")
    chosen = device or (keys[0] if keys else None)
    note = ""
    if len(keys) > 1:
        note = (f"note: this study holds trials from {len(keys)} devices; showing {chosen} "
                f"only (others: {', '.join(k for k in keys if k != chosen)}; "
                f"choose with --device-key)")
    return chosen, note


def choose(trials: Sequence[FrozenTrial], name: str, *, min_accuracy: float | None = None,
           max_seconds: float | None = None, trial: int | None = None,
           device: str | None = None, floor: float | None = None) -> FrozenTrial:
    """The fastest trial reaching ``min_accuracy``, the most accurate within
    ``max_seconds``, trial number ``trial``, or else the knee of the front, among the
    ``trials`` of study ``name`` at or above the accuracy ``floor`` (a trial asked for by
    number may be below it)."""
    by_number = {t.number: t for t in trials}
    if trial is not None:
        if trial not in by_number or not frontier.feasible(by_number[trial]):
            raise UserError(f"--trial: no completed trial {trial} in study {name!r}")
        return by_number[trial]
    pts = frontier.points(trials, device=device, floor=floor)
    if not pts:
        if floor is not None and frontier.points(trials, device=device):
            raise UserError(f"study {name!r} has no completed trial at or above its accuracy "
                            f"floor {floor:.4f} yet (pick one with --trial N)")
        raise UserError(f"study {name!r} has no completed trials yet")
    if min_accuracy is not None:
        point = frontier.fastest_reaching(pts, min_accuracy)
        if point is None:
            best = max(p.accuracy for p in pts)
            raise UserError(f"--min-accuracy: no trial reached {min_accuracy} "
                            f"(best is {best:.4f})")
    elif max_seconds is not None:
        point = frontier.most_accurate_within(pts, max_seconds)
        if point is None:
            fastest = min(p.seconds for p in pts)
            raise UserError(f"--max-seconds: no trial finished within {max_seconds}s "
                            f"(fastest is {fastest:.3f}s)")
    else:
        point = frontier.knee(frontier.pareto_front(pts))
    return by_number[point.number]
