"""A study as one self-contained HTML page: the front, its configs, and how the search went.

``build(study)`` returns the page; ``write(study, path)`` saves it. plotly.js is inlined
once in the page head and every figure only calls ``Plotly.newPlot``, so the page opens
offline and stays one file (about 5 MB, nearly all plotly.js). Every string that comes
from the study (its name, params, devices, the recipe) is escaped with ``html.escape``.

Seconds from different hardware are never put on one front: the page shows one device
key (``choose.device_of``: the one with the most feasible trials unless given) and says
so when the study holds several.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs

from search import metric as metrics
from search.errors import UserError
from search.reviewing import frontier, plots
from search.reviewing.choose import device_of, read
from search.reviewing.report import fmt_accuracy
from search.tuning import floor as floors

__all__ = ["SECTIONS", "build", "write"]

# The page's section headings, in order ("Verification" only with verdicts).
SECTIONS = ("Summary", "Pareto front", "Front configs", "Verification", "Hypervolume over time",
            "Parameter importance", "Learning curves", "Outcomes", "Devices", "Recipe")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1150px; padding: 1em 2em 4em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.25em 0.7em; text-align: left;
         vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.5em 0.8em; }
.muted { color: #666; } .knee { font-weight: 600; color: #1f4e9c; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the space file a recipe embeds) as YAML block scalars."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def _figure(fig: go.Figure) -> str:
    height = fig.layout.height or plots.HEIGHT
    body = fig.to_html(full_html=False, include_plotlyjs=False, default_height=f"{height}px",
                       config={"displaylogo": False, "responsive": True})
    return f'<div class="figure" style="min-height: {height}px">{body}</div>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()
           ) -> str:
    """Cells are already-escaped HTML; ``numeric`` column indexes are right-aligned; an
    empty ``head`` makes a table without a header row."""
    out = ["<table>"]
    if head:
        out += ["<thead><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        cells = (f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                 for i, c in enumerate(row))
        out += ["<tr>", *cells, "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def _section(title: str, *parts: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def _key(trial: optuna.trial.FrozenTrial) -> str:
    return str(trial.user_attrs.get("device", frontier.UNKNOWN_DEVICE))


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _summary(study: optuna.Study, trials: list[optuna.trial.FrozenTrial], pareto: bool,
             device: str | None, front: list[frontier.Point], floor: float | None) -> str:
    attrs, metric = study.user_attrs, metrics.of_study(study)
    objective = attrs.get("objective") or ("pareto" if pareto else "time-to-accuracy")
    if not pareto and attrs.get("target") is not None:
        objective += f" (target accuracy {attrs['target']})"
    starts = [t.datetime_start for t in trials if t.datetime_start]
    spent = sum(frontier.spent_seconds(t) for t in trials if _key(t) == device)
    outcomes = ", ".join(f"{k} {v}" for k, v in frontier.outcome_counts(trials).items())
    rows = [
        ("objective", objective),
        ("scored on", f"validation {metric.name} ({'max' if metric.maximize else 'min'}) "
                      f"and training seconds (min)" if pareto
         else "training seconds until the target accuracy (min)"),
        ("trials", f"{len(trials)} ({outcomes})"),
        ("device shown", device or "none"),
        (f"{metric.name} floor", floors.of_recipe(attrs.get("recipe")).describe(floor, metric)
         + (f"; points {'below' if metric.maximize else 'above'} it are not on the front"
            if floor is not None else "")),
        ("front", f"{len(front)} configs" if front else "no completed trials yet"),
        (f"best {metric.name}", f"{metric.value(max(p.accuracy for p in front)):.4f}"
         if front else "-"),
        ("fastest on the front", f"{front[0].seconds:.3f} s" if front else "-"),
        ("training seconds spent", f"{spent:.1f} s on this device"),
        ("first trial", min(starts).strftime("%Y-%m-%d %H:%M") if starts else "-"),
        ("recipe hash", str(attrs.get("recipe_hash", "-"))),
    ]
    return _table([], [(f"<b>{escape(k)}</b>", escape(str(v))) for k, v in rows])


def _front_table(front: list[frontier.Point], by_number: dict[int, Any]) -> str:
    if not front:
        return '<p class="muted">No completed feasible trials on this device yet.</p>'
    knee = frontier.knee(front).number
    rows = []
    for p in front:
        result = by_number[p.number].user_attrs.get("result") or {}
        label = f'<span class="knee">{p.number} (knee)</span>' if p.number == knee else str(
            p.number)
        rows.append((label, f"{p.accuracy:.4f}", fmt_accuracy(result.get("test_accuracy")),
                     f"{p.seconds:.3f}", escape(str(result.get("best_epoch", "-"))),
                     escape(", ".join(plots.param_items(by_number[p.number].params)))))
    return _table(["trial", "val accuracy", "test accuracy", "seconds", "best epoch", "params"],
                  rows, (1, 2, 3, 4))


def _verification(verdicts: Sequence[Any]) -> str:
    rows = [(str(v.trial), str(len(v.repeats)), f"{v.original[0]:.4f}",
             f"{v.accuracy_mean:.4f} ± {v.accuracy_std:.4f}", f"{v.original[1]:.3f}",
             f"{v.seconds_mean:.3f} ± {v.seconds_std:.3f}",
             escape(", ".join(v.flags)) or "ok") for v in verdicts]
    return ("<p>Front configs re-trained with new seeds: mean ± std over the original run and "
            "its repeats (error bars on the front figure).</p>"
            + _table(["trial", "repeats", "accuracy (run)", "accuracy (mean ± std)",
                      "seconds (run)", "seconds (mean ± std)", "flags"], rows, (1, 2, 3, 4, 5)))


def _devices(trials: list[optuna.trial.FrozenTrial], shown: str | None, note: str) -> str:
    found: dict[str, dict[str, Any]] = {}
    for t in trials:
        key = _key(t)
        info = (t.user_attrs.get("result") or {}).get("device")
        if isinstance(info, dict) and not found.get(key):
            found[key] = info
        found.setdefault(key, {})
    counts = {k: sum(1 for t in trials if _key(t) == k) for k in found}
    fields = sorted({f for info in found.values() for f in info if f != "key"})
    rows = [(escape(k) + (" <b>(shown)</b>" if k == shown else ""), str(counts[k]),
             *(escape(str(found[k].get(f, "-"))) for f in fields))
            for k in frontier.devices(trials)]
    parts = [_note(note)] if note else []
    parts.append("<p>Seconds are comparable only within one device key; every figure above "
                 "uses the one shown.</p>")
    if rows:
        parts.append(_table(["device key", "trials", *fields], rows, (1,)))
    return "".join(parts)


def build(study: optuna.Study, *, device: str | None = None, verdicts: Sequence[Any] | None = None,
          color_by: str | None = None, log_time: bool | None = None,
          trials: Sequence[Any] | None = None) -> str:
    """The report page of ``study`` as one HTML string (see the module docstring).

    ``device``: the device key to show (default: the one with the most feasible trials; an
    unknown key is a UserError). ``verdicts``: ``search.reviewing.verify.verify``'s output, drawn as
    error bars on the front and listed in a table. ``color_by``/``log_time``: as in
    ``plots.pareto_data``/``plots.pareto_figure``. ``trials``: the study's trials, when
    the caller read them already (default: read here).
    """
    trials = read(study) if trials is None else list(trials)
    pareto = len(study.directions) == 2
    chosen, note = device_of(trials, device)
    floor = floors.of_study(study, trials)
    data = plots.pareto_data(trials, device=chosen, color_by=color_by, floor=floor,
                             metric=metrics.of_study(study))
    shown = data.device
    by_number = {t.number: t for t in trials}
    front = (frontier.pareto_front(frontier.points(trials, device=shown, floor=floor))
             if shown else [])
    name = study.study_name
    kind = "speed/accuracy" if pareto else "time-to-accuracy"

    pareto_fig = plots.pareto_figure(data, log_time=log_time, verdicts=verdicts,
                                     title=f"{name}: {kind} front on {shown}")
    target = study.user_attrs.get("target")
    if not pareto and target is not None:
        pareto_fig.add_hline(y=float(target), line_dash="dot", line_color="#d62728",
                             annotation_text=f"target {target}", annotation_position="top left")
    sections = [_section("Summary", _note(note) if note else "",
                         _summary(study, trials, pareto, shown, front, floor)),
                _section("Pareto front", _figure(pareto_fig)),
                _section("Front configs", _front_table(front, by_number))]
    if verdicts:
        sections.append(_section("Verification", _verification(verdicts)))

    points = frontier.points(trials, device=shown, floor=floor) if shown else []
    if points:
        reference = frontier.default_reference(points)
        history = frontier.hypervolume_history(trials, reference, device=shown, floor=floor)
        hv = (f"<p>Reference point: accuracy {reference[0]:g}, {reference[1]:.1f} s "
              f"(1.1 × the slowest completed trial).</p>"
              + _figure(plots.hypervolume_figure(history)))
    else:
        hv = '<p class="muted">No completed trials yet: no front, no hypervolume.</p>'
    sections.append(_section("Hypervolume over time", hv))

    acc, sec = plots.importances(study, device=shown, trials=trials)
    parts = []
    if pareto and not acc:
        parts.append(_note("Importance for accuracy is not available: it needs at least two "
                           "feasible completed trials on this device whose params vary."))
    if not pareto:
        parts.append("<p>Time-to-accuracy study: every completed trial reached the target, so "
                     "only the importance for training seconds is shown.</p>")
    if not sec:
        parts.append(_note("Importance for training seconds is not available: it needs at "
                           "least two feasible completed trials on this device whose params "
                           "vary."))
    if acc or sec:
        parts.append(_figure(plots.importance_figure(acc, sec)))
    sections.append(_section("Parameter importance", *parts))

    curves = frontier.curves(trials, [p.number for p in front])
    curves_fig = plots.curves_figure(curves, metric=metrics.of_study(study))
    sections.append(_section("Learning curves", _figure(curves_fig)
                             if any(curves.values()) else
                             '<p class="muted">No learning curves on the front.</p>'))

    counts = frontier.outcome_counts(trials)
    sections.append(_section("Outcomes", _figure(plots.outcomes_figure(counts)) if counts else
                             '<p class="muted">No trials yet.</p>'))
    sections.append(_section("Devices", _devices(trials, shown, note)))
    recipe = study.user_attrs.get("recipe")
    text = (yaml.dump(recipe, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
            if recipe else "# this study stores no recipe")
    sections.append(_section("Recipe", f"<pre>{escape(text)}</pre>"))

    made = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(name)}: search report</title>", f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head><body>",
        f"<h1>Study {escape(name)}</h1>",
        f'<p class="muted">{escape(kind)} study · report made {made} by '
        f"<code>search</code></p>",
        *sections, "</body></html>"])


def write(study: optuna.Study, path: str | os.PathLike[str], **options: Any) -> Path:
    """``build(study, **options)`` saved as UTF-8 at ``path``."""
    out = Path(path)
    page = build(study, **options)
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as e:
        raise UserError(f"{out}: cannot write: {e.strerror or e}") from None
    return out
