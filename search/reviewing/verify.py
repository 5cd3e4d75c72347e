"""Does the front survive the noise? Re-run front configs with new seeds and compare.

A front drawn from single runs is optimistic: wall-clock seconds vary by a few percent
from run to run, and accuracy by the luck of one seed. ``verify`` re-trains each front
config ``repeats`` times with new seeds, stores every repeat as a trial of the companion
study ``<name>:verify`` in the same storage (an ordinary Optuna study, user attribute
``original`` = the trial number it repeats), and flags configs whose place on the front
does not survive:

- ``dominated``: the mean point (mean accuracy, mean seconds) of the config is dominated
  by another config's mean point;
- ``optimistic``: the original single run is better than its repeats by more than 2 of
  their standard deviations: more accurate than their mean + 2 std, or faster than their
  mean - 2 std (its reported point was luck). Needs at least 2 repeats. The repeats'
  own mean and std are used: the original, inside the sample, could never lie that far.
- ``missed target Nx`` (time-to-accuracy studies): N repeats never reached the target.

A repeat measures the same point as the original: a ``pareto`` repeat stops after the
epochs the original ran; a time-to-accuracy repeat stops at the study's target, and its
seconds are its time to target (or all it trained, where it missed).

Repeats run on this machine; they are refused when its device fingerprint differs from
the one the study measured (seconds from different devices are never compared).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

SUFFIX = ":verify"


@dataclass
class Verdict:
    """Repeats of one front config, summarized."""

    trial: int
    original: tuple[float, float]  # (accuracy, seconds) of the single original run
    repeats: list[tuple[float, float]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    missed: int = 0  # time-to-accuracy repeats that never reached the target

    def _stat(self, i: int, fn: Callable[[Sequence[float]], float]) -> float:
        values = [self.original[i]] + [r[i] for r in self.repeats]
        return fn(values) if len(values) > 1 else (values[0] if fn is statistics.fmean else 0.0)

    @property
    def accuracy_mean(self) -> float:
        return self._stat(0, statistics.fmean)

    @property
    def accuracy_std(self) -> float:
        return self._stat(0, statistics.stdev)

    @property
    def seconds_mean(self) -> float:
        return self._stat(1, statistics.fmean)

    @property
    def seconds_std(self) -> float:
        return self._stat(1, statistics.stdev)

    def optimistic(self) -> bool:
        """The original run beats its repeats by more than 2 of their std (>= 2 repeats)."""
        if len(self.repeats) < 2:
            return False
        acc = [r[0] for r in self.repeats]
        sec = [r[1] for r in self.repeats]
        return (self.original[0] > statistics.fmean(acc) + 2 * statistics.stdev(acc)
                or self.original[1] < statistics.fmean(sec) - 2 * statistics.stdev(sec))


def flag(verdicts: list[Verdict]) -> list[Verdict]:
    """Set each verdict's flags (see the module docstring); pure, for hand-built cases."""
    means = [(v.accuracy_mean, v.seconds_mean) for v in verdicts]
    for v, m in zip(verdicts, means, strict=True):
        v.flags = []
        if any(o[0] >= m[0] and o[1] <= m[1] and o != m for o in means):
            v.flags.append("dominated")
        if v.optimistic():
            v.flags.append("optimistic")
        if v.missed:
            v.flags.append(f"missed target {v.missed}x")
    return verdicts


def companion(study: optuna.Study) -> optuna.Study:
    """The ``<name>:verify`` study beside ``study`` (created on first use)."""
    return optuna.create_study(study_name=study.study_name + SUFFIX,
                               storage=study._storage, directions=study.directions,
                               load_if_exists=True)


def stored_repeats(study: optuna.Study, device: str | None = None
                   ) -> dict[int, list[tuple[float, float]]]:
    """Repeats stored so far, by original trial number (only those on ``device``, if given)."""
    names = set(optuna.get_all_study_names(study._storage))
    if study.study_name + SUFFIX not in names:
        return {}
    out: dict[int, list[tuple[float, float]]] = {}
    for t in companion(study).get_trials(deepcopy=False,
                                         states=(optuna.trial.TrialState.COMPLETE,)):
        if device is not None and t.user_attrs.get("device") != device:
            continue
        result = t.user_attrs.get("result", {})
        out.setdefault(t.user_attrs["original"], []).append(
            (result.get("accuracy", 0.0), t.values[-1]))  # seconds as told (to target)
    return out


def _at_target(target: float) -> Callable[..., str | None]:
    """An epoch callback that stops a run when it reaches ``target`` validation accuracy."""
    return lambda epoch, acc, *_: f"reached target {target}" if acc >= target else None


def verify(study: optuna.Study, *, top: int, repeats: int, device: str = "auto",
           device_key: str | None = None,
           on_run: Callable[[int, int, Any], None] | None = None) -> list[Verdict]:
    """Re-train the ``top`` most accurate front configs ``repeats`` times each, on this
    machine's ``device``, which must be the device the study measured (``device_key``,
    default: the study's most used one)."""
    from search import metric as metrics
    from search.errors import UserError
    from search.references import load_callable
    from search.reviewing import frontier
    from search.reviewing.choose import device_of, read
    from search.training.config import TrainConfig
    from search.training.data import DataSpec
    from search.training.data import load as load_data
    from search.training.engine import train
    from search.training.models import ModelSpec
    from search.training.run import run_trainer
    from search.training.timing import fingerprint, resolve_device
    from search.tuning import floor as floors

    recipe = study.user_attrs.get("recipe") or {}
    metric = metrics.of_recipe(recipe)
    target = recipe.get("target") if recipe.get("objective") == "time-to-accuracy" else None
    target = None if target is None else metric.score(target)  # as the study ranks it
    trainer = load_callable(recipe["train"], "train") if recipe.get("train") else None
    if trainer is None:
        data_section = dict(recipe.get("data") or {"name": "digits"})
        if data_section.get("classes") is not None:
            data_section["classes"] = tuple(data_section["classes"])
        data = load_data(DataSpec(**data_section))
        model = ModelSpec(**(recipe.get("model") or {"name": "cnn"}))
    trials = {t.number: t for t in read(study)}
    device_key, _ = device_of(trials.values(), device_key)
    here = fingerprint(resolve_device(device))["key"]
    if here != device_key:
        raise UserError(f"--device: this machine measures as {here!r} but the front was "
                        f"measured on {device_key!r}; re-runs must use the same device "
                        f"(and thread count)")
    floor = floors.of_study(study, trials.values())
    front = frontier.pareto_front(frontier.points(trials.values(), device=device_key,
                                                  floor=floor))
    chosen = sorted(front, key=lambda p: -p.accuracy)[:top]
    store = companion(study)
    done = stored_repeats(study, device_key)
    verdicts = []
    for point in chosen:
        original = trials[point.number]
        base = TrainConfig.from_mapping(original.user_attrs["config"])
        verdict = Verdict(point.number, (point.accuracy, point.seconds),
                          list(done.get(point.number, [])))
        # Stop where the original run stopped (a pruned trial's point is the best of the
        # epochs it ran), so the repeat measures the same point; a time-to-accuracy repeat
        # stops at the target, as the search's runs did, and its seconds are time to target.
        ran = (original.user_attrs.get("result") or {}).get("epochs_run") or base.epochs
        stop_after, callback = (ran, None) if target is None else (None, _at_target(target))
        fields = TrainConfig.fields()  # the rest of a trial's params are its trainer's own
        extras = {k: v for k, v in original.params.items() if k not in fields
                  and not (k.startswith("use_") and k.removeprefix("use_") in fields)}
        for k in range(len(verdict.repeats), repeats):
            seed = base.seed + 1000 * (k + 1)  # new seeds, far from the search's
            config = base.replace(seed=seed, stop_after=stop_after)
            result = (train(config, data, model, device=device, callback=callback)
                      if trainer is None else
                      run_trainer(trainer, config, device=device, params=extras,
                                  decide=callback, metric=metric))
            missed = target is not None and result.accuracy < target
            seconds = result.train_seconds if missed else result.seconds  # missed: a bound
            with warnings.catch_warnings():  # a repeat is told at once: no heartbeat needed
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = store.ask()
            trial.set_user_attr("original", point.number)
            trial.set_user_attr("seed", seed)
            trial.set_user_attr("result", result.to_dict())
            trial.set_user_attr("outcome", "completed" if target is not None and not missed
                                else result.outcome)
            trial.set_user_attr("device", result.device["key"])
            store.tell(trial, [result.accuracy, seconds] if len(study.directions) == 2
                       else [seconds])
            verdict.repeats.append((result.accuracy, seconds))
            if on_run:
                on_run(point.number, k + 1, result)
        if target is not None:
            verdict.missed = sum(acc < target for acc, _ in verdict.repeats)
        verdicts.append(verdict)
    return flag(verdicts)
