"""Text views of studies: the front as a table, and per-study status."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from search import metric as metrics
from search.reviewing import frontier
from search.reviewing.choose import read
from search.tuning import floor as floors


def _front(study: optuna.Study, trials: list[optuna.trial.FrozenTrial],
           device: str | None = None) -> list[frontier.Point]:
    """The front above the study's accuracy floor, on one device (the most used one)."""
    if device is None:
        keys = frontier.devices([t for t in trials if frontier.feasible(t)])
        device = keys[0] if keys else None
    floor = floors.of_study(study, trials)
    return frontier.pareto_front(frontier.points(trials, device=device, floor=floor))


def front_rows(study: optuna.Study, device: str | None = None) -> list[dict[str, Any]]:
    """The front of one device (the most used one by default), fastest first; the metric
    as the user reads it (``accuracy`` holds it, whatever its name)."""
    metric = metrics.of_study(study)
    trials = read(study)
    by_number = {t.number: t for t in trials}
    rows = []
    for p in _front(study, trials, device):
        trial = by_number[p.number]
        config = trial.user_attrs.get("config", {})
        result = trial.user_attrs.get("result", {})
        rows.append({"trial": p.number, "metric": metric.name,
                     "accuracy": metric.value(p.accuracy),
                     "test_accuracy": metric.value(result.get("test_accuracy")),
                     "seconds": p.seconds,
                     "best_epoch": result.get("best_epoch"), "device": p.device,
                     "params": dict(trial.params), "config": config})
    return rows


def front_table(study: optuna.Study, device: str | None = None) -> str:
    """A plain-text table of the front, with the params that vary along it."""
    rows = front_rows(study, device)
    if not rows:
        return f"study {study.study_name!r}: no completed trials yet"
    varying = sorted({k for r in rows for k in r["params"] if not k.startswith("use_")})
    short = metrics.of_study(study).short
    head = ["trial", f"val {short}", f"test {short}", "seconds", *varying]
    body = [[str(r["trial"]), f"{r['accuracy']:.4f}", fmt_accuracy(r["test_accuracy"]),
             f"{r['seconds']:.3f}",
             *[_fmt(r["params"].get(k)) for k in varying]] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = "  ".join
    out = [f"Pareto front of {study.study_name!r} on {rows[0]['device']} "
           f"({len(rows)} configs, fastest first)",
           line(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    out += [line(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(out)


def fmt_accuracy(v: float | None) -> str:
    """An accuracy to 4 places; ``-`` where there is none (no test split)."""
    return "-" if v is None else f"{v:.4f}"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def status(storage: str, name: str | None = None) -> list[dict[str, Any]]:
    """Counts by outcome, front size, best accuracy, fastest time, running trials."""
    from search.errors import UserError
    from search.tuning.storage import mask_url as mask
    from search.tuning.storage import open_storage

    store = open_storage(storage, must_exist=True)
    names = optuna.get_all_study_names(store)
    if name is not None and name not in names:
        raise UserError(f"no study named {name!r} in {mask(storage)} "
                        f"(studies: {', '.join(names) or 'none'})")
    rows = []
    for n in [name] if name else names:
        study = optuna.load_study(study_name=n, storage=store)
        trials = read(study)
        pareto = len(study.directions) == 2
        front = _front(study, trials) if pareto else []
        floor = floors.of_study(study, trials)
        done = [t for t in trials if frontier.feasible(t, floor)]
        metric = metrics.of_study(study)
        rows.append({
            "study": n,
            "metric": metric.name, "maximize": metric.maximize,
            "objective": study.user_attrs.get("objective", "pareto" if pareto else "?"),
            "trials": len(trials),
            "outcomes": frontier.outcome_counts(trials),
            "floor": floor,
            "floor_text": (floors.of_recipe(study.user_attrs.get("recipe")).describe(floor, metric)
                           if pareto else "none (time-to-accuracy)"),
            "below_floor": sum(frontier.below_floor(t, floor) for t in trials),
            "front_size": len(front),
            "best_accuracy": metric.value(max((p.accuracy for p in front), default=None)),
            "fastest_seconds": (min((t.values[-1] for t in done), default=None)),
            "running": [t.number for t in trials if t.state == TrialState.RUNNING],
        })
    return rows


def status_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no studies"
    out = []
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items()) or "no trials"
        best = "-" if r["best_accuracy"] is None else f"{r['best_accuracy']:.4f}"
        fast = "-" if r["fastest_seconds"] is None else f"{r['fastest_seconds']:.3f}s"
        running = ", ".join(map(str, r["running"])) or "none"
        out.append(f"{r['study']} ({r['objective']}): {r['trials']} trials: {counts}; "
                   f"front {r['front_size']}, best {r['metric']} {best}, fastest {fast}; "
                   f"{r['metric']} floor {r['floor_text']}, {r['below_floor']} "
                   f"{'below' if r['maximize'] else 'above'} it; "
                   f"running now: {running}")
    return "\n".join(out)
