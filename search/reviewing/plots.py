"""Plotly drawing of what ``search/reviewing/frontier.py`` computes.

Each figure is split in two, as Optuna's own plots are: a pure function gathers the data
(``pareto_data`` -> ``ParetoData``, ``importances`` -> two dicts) and a second one draws it
(``*_figure``). Tests assert on the data and on the traces, never on pixels.

Seconds measured on different devices are never drawn together: ``pareto_data`` keeps
one device key (by default the one with the most feasible trials).

Text that reaches plotly (titles, legend names, hover) goes through ``_text``: plotly
renders a small HTML subset in SVG, so a param value such as ``"<b>"`` is escaped to show
as typed. Plotly decodes only ``&amp; &lt; &gt;`` (and numeric entities) back, hence
``quote=False``.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from search.errors import UserError
from search.metric import ACCURACY, Metric
from search.outcomes import INFEASIBLE
from search.reviewing import frontier

__all__ = [
    "Marker",
    "ParetoData",
    "curves_figure",
    "hypervolume_figure",
    "importance_figure",
    "importances",
    "outcomes_figure",
    "param_items",
    "pareto_data",
    "pareto_figure",
    "pick_device",
    "write_html",
    "write_png",
]

MISSING = "n/a"  # the colour value of a trial without the color_by param
FADED = 0.35  # opacity of dominated and pruned points
BELOW = 0.2  # opacity of points below the accuracy floor
LOG_SPAN = 30.0  # slowest / fastest seconds drawn above which the time axis is log
HEIGHT = 480  # pixels, every figure
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
FRONT_COLOR = "#1f4e9c"
OTHER_COLOR = "#7f7f7f"
OUTCOME_COLORS = {"completed": "#2ca02c", "early-stopped": "#98df8a", "pruned": "#7f7f7f",
                  "unreached": "#c7c7c7", "diverged": "#d62728", "oom": "#ff7f0e",
                  "failed": "#8c564b", "error": "#8c564b", "interrupted": "#bcbd22",
                  "running": "#1f77b4"}
SECONDS_TITLE = "training seconds (timed region)"


class Marker(NamedTuple):
    """One trial drawn as a point. ``hover`` is plotly markup (``<br>`` between lines,
    user strings escaped); ``color`` the plain value of the ``color_by`` param."""

    number: int
    accuracy: float
    seconds: float
    outcome: str
    hover: str
    color: str


class ParetoData(NamedTuple):
    """Everything ``pareto_figure`` draws, for one device.

    ``front``: the non-dominated feasible complete trials at or above the accuracy
    ``floor``, fastest first (a pareto trial stopped by the pruner completes with the point
    it reached, and is one of these). ``dominated``: the other feasible complete trials
    at or above the floor. ``below``: complete trials below the floor (not worth having;
    drawn faded). ``pruned``: time-to-accuracy trials without a point (pruned, target
    unreached) at their last curve point: seconds so far and best accuracy so far.
    Infeasible trials (diverged, out of memory), failed and running ones are left out.
    ``step_x``/``step_y``: ``frontier.step_line`` of the front, extended to the slowest
    point drawn. ``colors``: the distinct colour values, in legend order. Every accuracy,
    the floor and ``step_y`` are the study's ``metric`` as a user reads it (a minimized
    metric is drawn on a reversed axis, so better is up either way).
    """

    device: str | None
    color_by: str | None
    front: tuple[Marker, ...]
    dominated: tuple[Marker, ...]
    pruned: tuple[Marker, ...]
    below: tuple[Marker, ...]
    floor: float | None
    step_x: tuple[float, ...]
    step_y: tuple[float, ...]
    colors: tuple[str, ...]
    metric: Metric = ACCURACY


def _text(value: Any) -> str:
    return html.escape(str(value), quote=False)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def param_items(params: Mapping[str, Any]) -> list[str]:
    """``name=value`` per param, readable: floats to 3 significant digits, and an optional
    trick's on/off switch folded into it (``use_mixup_alpha=False`` -> ``mixup_alpha=off``;
    when on, only ``mixup_alpha=0.31`` is shown). Plain text, not escaped."""
    items = []
    for name, value in params.items():
        if name.startswith("use_") and isinstance(value, bool):
            trick = name[len("use_"):]
            if not value and trick not in params:
                items.append(f"{trick}=off")
            elif not value or trick not in params:
                items.append(f"{name}={value}")
            continue
        items.append(f"{name}={_fmt(value)}")
    return items


def pick_device(trials: Sequence[FrozenTrial], device: str | None) -> str | None:
    """``device`` if some trial ran on it, else a UserError naming the devices there are;
    ``None`` -> the device with the most feasible trials (then the most trials at all)."""
    every = frontier.devices(trials)
    if device is not None:
        if device not in every:
            raise UserError(f"--device-key: no trials on {device!r} "
                            f"(devices: {', '.join(every) or 'none'})")
        return device
    keys = frontier.devices([t for t in trials if frontier.feasible(t)]) or every
    return keys[0] if keys else None


def _on(trial: FrozenTrial, device: str | None) -> bool:
    return device is None or str(trial.user_attrs.get("device", frontier.UNKNOWN_DEVICE)) == device


def _hover(number: int, outcome: str, accuracy: float, seconds: float,
           params: Mapping[str, Any], note: str = "", test: float | None = None,
           name: str = "accuracy") -> str:
    items = param_items(params)
    rows = [", ".join(items[i:i + 4]) for i in range(0, len(items), 4)]
    tested = "" if test is None else f" (test {test:.4f})"
    head = [f"trial {number} · {outcome}{note}",
            f"{name} {accuracy:.4f}{tested} · {seconds:.3f} s"]
    return "<br>".join(_text(line) for line in [*head, *rows])


def _pruned_point(trial: FrozenTrial) -> tuple[float, float] | None:
    curve = trial.user_attrs.get("curve") or []
    if not curve:
        return None
    return max(float(e["accuracy"]) for e in curve), float(curve[-1]["seconds"])


def _order(value: Any) -> tuple[int, float, str]:
    if value is None:
        return 2, 0.0, ""
    if isinstance(value, (int, float)):
        return 0, float(value), ""
    return 1, 0.0, str(value)


def pareto_data(trials: Iterable[FrozenTrial], *, device: str | None,
                color_by: str | None = None, floor: float | None = None,
                metric: Metric = ACCURACY) -> ParetoData:
    """The points of one device's speed/accuracy plot (see ``ParetoData``).

    ``device``: a device key (``user_attrs["device"]``); ``None`` picks the device with the
    most feasible trials (``pick_device``). ``color_by``: a param name whose value colours
    each point (``"n/a"`` where a trial lacks it); a name that no trial has is a UserError
    listing the params there are.
    """
    trials = list(trials)
    if color_by is not None:
        names = sorted({name for t in trials for name in t.params})
        if color_by not in names:
            raise UserError(f"--color-by: no trial has a param {color_by!r} "
                            f"(params: {', '.join(names) or 'none'})")
    device = pick_device(trials, device)
    by_number = {t.number: t for t in trials}
    raw: dict[int, Any] = {t.number: t.params.get(color_by) for t in trials} if color_by else {}

    def color(number: int) -> str:
        value = raw.get(number)
        return MISSING if value is None else _fmt(value)

    def marker(number: int, accuracy: float, seconds: float, outcome: str, note: str = ""
               ) -> Marker:
        trial = by_number[number]
        test = metric.value((trial.user_attrs.get("result") or {}).get("test_accuracy"))
        value = metric.value(accuracy)  # the scores the study ranks, drawn as the metric
        return Marker(number, value, seconds, outcome,
                      _hover(number, outcome, value, seconds, trial.params, note, test,
                             metric.name), color(number))

    here = [t for t in trials if _on(t, device)]
    pts = frontier.points(here, floor=floor)
    front_points = frontier.pareto_front(pts)
    on_front = {p.number for p in front_points}
    front = tuple(marker(p.number, p.accuracy, p.seconds, p.outcome, " · on the front")
                  for p in front_points)
    dominated = tuple(marker(p.number, p.accuracy, p.seconds, p.outcome)
                      for p in pts if p.number not in on_front)
    pruned = []
    for t in sorted(trials, key=lambda t: t.number):
        outcome = str(t.user_attrs.get("outcome", "pruned"))
        if t.state != TrialState.PRUNED or outcome in INFEASIBLE or not _on(t, device):
            continue
        point = _pruned_point(t)
        if point is not None:
            pruned.append(marker(t.number, *point, outcome, " · best so far when stopped"))
    below = tuple(marker(p.number, p.accuracy, p.seconds, p.outcome, " · below the floor")
                  for p in frontier.points([t for t in here if frontier.below_floor(t, floor)]))
    drawn = [*front, *dominated, *pruned, *below]
    until = max((m.seconds for m in drawn), default=None)
    step_x, step_y = frontier.step_line(front_points, until=until if front_points else None)
    values = {raw.get(m.number) for m in drawn} if color_by else set()
    colors = tuple(MISSING if v is None else _fmt(v) for v in sorted(values, key=_order))
    return ParetoData(device, color_by, front, dominated, tuple(pruned), below,
                      metric.value(floor), tuple(step_x),
                      tuple(metric.value(y) for y in step_y), colors, metric)


def _layout(fig: go.Figure, title: str, x: str, y: str, **extra: Any) -> go.Figure:
    extra.setdefault("height", HEIGHT)
    fig.update_layout(title={"text": _text(title)} if title else None, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 60 if title else 30, "b": 50}, **extra)
    if x:
        fig.update_layout(xaxis_title=x)
    if y:
        fig.update_layout(yaxis_title=y)
    return fig


def auto_log_time(data: ParetoData) -> bool:
    """A log seconds axis when the points drawn span more than ``LOG_SPAN`` x: on a
    linear axis the fast end of such a front (the configs this tool is for) is a smudge
    at zero next to one slow trial."""
    seconds = [m.seconds for m in (*data.front, *data.dominated, *data.pruned, *data.below)
               if m.seconds > 0]
    return bool(seconds) and max(seconds) > LOG_SPAN * min(seconds)


def pareto_figure(data: ParetoData, *, log_time: bool | None = None, title: str = "",
                  verdicts: Sequence[Any] | None = None) -> go.Figure:
    """Seconds on x, validation accuracy on y: the front as a step line with markers,
    dominated points faded, pruned ones faded and hollow, one colour per value of
    ``data.color_by`` (with a legend). ``verdicts`` (``search.reviewing.verify.Verdict``) add each
    re-run config's mean point with mean +- std error bars in both axes, and mark flagged
    configs with a red cross and their flags."""
    fig = go.Figure()
    if data.step_x:
        fig.add_trace(go.Scatter(x=list(data.step_x), y=list(data.step_y), mode="lines",
                                 line_shape="hv", line={"color": FRONT_COLOR, "width": 1.5},
                                 name=f"front (best {data.metric.name} within x)",
                                 hoverinfo="skip"))
    palette = {value: PALETTE[i % len(PALETTE)] for i, value in enumerate(data.colors)}
    for value in data.colors:
        # A legend key per colour, drawn as a plain dot whichever sets the value occurs in;
        # clicking it toggles every trace of its legend group.
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=_text(value),
                                 legendgroup=value, marker={"color": palette[value], "size": 10},
                                 hoverinfo="skip"))
    styles = (("front", data.front, 1.0, "circle"),
              ("dominated", data.dominated, FADED, "circle"),
              ("pruned", data.pruned, FADED, "circle-open"),
              ("below the floor", data.below, BELOW, "x"))
    for kind, markers, opacity, symbol in styles:
        groups = ([(v, [m for m in markers if m.color == v]) for v in data.colors]
                  if data.color_by else [("", list(markers))])
        for value, group in groups:
            if not group:
                continue
            if data.color_by:
                name, legend, colour = f"{kind}: {value}", value, palette[value]
            else:
                name, legend = kind, kind
                colour = FRONT_COLOR if kind in ("front", "dominated") else OTHER_COLOR
            fig.add_trace(go.Scatter(
                x=[m.seconds for m in group], y=[m.accuracy for m in group], mode="markers",
                name=_text(name), legendgroup=legend, showlegend=not data.color_by,
                opacity=opacity, hovertext=[m.hover for m in group], hoverinfo="text",
                customdata=[m.number for m in group],
                marker={"color": colour, "symbol": symbol, "size": 11 if kind == "front" else 10,
                        "line": {"width": 2 if symbol.endswith("open") else 1,
                                 "color": colour if symbol.endswith("open") else "white"}}))
    if verdicts:
        _add_verdicts(fig, verdicts, data.metric)
    subtitle = "filled: on the front · faded: dominated"
    if data.pruned:
        subtitle += f" · hollow: pruned (best {data.metric.name} so far when stopped)"
    accuracy_range = worth_having_range(data)
    if data.below:
        subtitle += (f" · x: below the {data.metric.name} floor" if accuracy_range is None else
                     f" · {len(data.below)} below the floor, under the axis (double-click: all)")
    if data.floor is not None:
        fig.add_hline(y=data.floor, line_dash="dot", line_color=OTHER_COLOR,
                      annotation_text=f"{data.metric.name} floor {data.floor:.3f}",
                      annotation_position="bottom right")
    if log_time is None:
        log_time = auto_log_time(data)
    _layout(fig, title, SECONDS_TITLE + (" (log)" if log_time else ""),
            axis_title(data.metric),
            legend_title_text=_text(data.color_by or ""), hovermode="closest")
    fig.update_layout(title={"subtitle": {"text": subtitle}} if title else None)
    if not title:
        fig.add_annotation(text=subtitle, xref="paper", yref="paper", x=0, y=1.06,
                           showarrow=False, xanchor="left", font={"size": 11})
    if log_time:
        fig.update_xaxes(type="log")
    if accuracy_range is not None:
        fig.update_yaxes(range=list(accuracy_range))  # reversed for a minimized metric
    elif not data.metric.maximize:
        fig.update_yaxes(autorange="reversed")  # lower is better: up is better
    return fig


def worth_having_range(data: ParetoData) -> tuple[float, float] | None:
    """The accuracy axis's range when a floor is drawn: from a little under the floor to a
    little over the best point, so the front's differences (a few tenths of a percent
    between configs) are visible instead of a flat line above far worse points; None (the
    axis fits every point) without a floor or a point above it."""
    score = data.metric.score  # higher is better, as the study ranks it
    floor = None if data.floor is None else score(data.floor)
    above = [score(m.accuracy) for m in (*data.front, *data.dominated, *data.pruned)
             if floor is not None and score(m.accuracy) >= floor]
    if not above:
        return None
    span = max(max(above) - floor, 0.01)
    return score(floor - 0.25 * span), score(max(above) + 0.1 * span)


def _add_verdicts(fig: go.Figure, verdicts: Sequence[Any], metric: Metric = ACCURACY) -> None:
    means = [metric.value(v.accuracy_mean) for v in verdicts]
    hover = [_text(f"trial {v.trial} re-run {len(v.repeats)}x: {metric.name} "
                   f"{mean:.4f} ± {v.accuracy_std:.4f}, seconds "
                   f"{v.seconds_mean:.3f} ± {v.seconds_std:.3f}"
                   + (f" · {', '.join(v.flags)}" if v.flags else ""))
             for v, mean in zip(verdicts, means, strict=True)]
    fig.add_trace(go.Scatter(
        x=[v.seconds_mean for v in verdicts], y=means,
        mode="markers", name="re-run mean ± std", hovertext=hover, hoverinfo="text",
        marker={"symbol": "diamond", "size": 9, "color": "black"},
        error_x={"type": "data", "array": [v.seconds_std for v in verdicts], "thickness": 1},
        error_y={"type": "data", "array": [v.accuracy_std for v in verdicts], "thickness": 1}))
    flagged = [v for v in verdicts if v.flags]
    if flagged:
        fig.add_trace(go.Scatter(
            x=[v.seconds_mean for v in flagged],
            y=[metric.value(v.accuracy_mean) for v in flagged],
            mode="markers+text", name="flagged", text=[_text(", ".join(v.flags)) for v in flagged],
            textposition="bottom center", hoverinfo="skip",
            marker={"symbol": "x-thin-open", "size": 16, "color": "#d62728",
                    "line": {"width": 2, "color": "#d62728"}}))


def hypervolume_figure(history: Sequence[tuple[int, float, float]], *, title: str = ""
                       ) -> go.Figure:
    """Hypervolume of the front (y) against the training seconds the study had spent (x),
    from ``frontier.hypervolume_history``: flat where a trial added cost but no front point."""
    fig = go.Figure(go.Scatter(
        x=[h[1] for h in history], y=[h[2] for h in history], mode="lines+markers",
        line_shape="hv", name="hypervolume", marker={"size": 5},
        hovertext=[f"after trial {n}: {spent:.1f} s spent, hypervolume {hv:.4g}"
                   for n, spent, hv in history], hoverinfo="text"))
    return _layout(fig, title, "cumulative training seconds of all finished trials",
                   "hypervolume (accuracy × seconds)", showlegend=False)


def importance_figure(importances_accuracy: Mapping[str, float],
                      importances_time: Mapping[str, float], *, title: str = "") -> go.Figure:
    """Two horizontal bar charts side by side: param importance for accuracy and for
    training seconds, most important on top. An empty mapping draws an empty panel
    titled "not available"."""
    panels = (("accuracy", importances_accuracy), ("training seconds", importances_time))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.22, subplot_titles=[
        f"for {name}" + ("" if values else " (not available)") for name, values in panels])
    for col, (name, values) in enumerate(panels, start=1):
        ordered = sorted(values.items(), key=lambda kv: kv[1])  # plotly draws bottom-up
        fig.add_trace(go.Bar(x=[v for _, v in ordered], y=[_text(k) for k, _ in ordered],
                             orientation="h", name=name, marker_color=PALETTE[col - 1],
                             hovertemplate="%{y}: %{x:.3f}<extra></extra>"), row=1, col=col)
        if values:
            fig.update_xaxes(title_text="importance (fANOVA, sums to 1)", rangemode="tozero",
                             row=1, col=col)
        else:  # no empty grid: the panel title says "not available"
            fig.update_xaxes(visible=False, row=1, col=col)
            fig.update_yaxes(visible=False, row=1, col=col)
    return _layout(fig, title, "", "", showlegend=False)


def axis_title(metric: Metric) -> str:
    """The metric's axis (a minimized metric's runs downward: better is up either way)."""
    return (f"validation {metric.name}" if metric.maximize
            else f"validation {metric.name} (lower is better: axis reversed)")


def curves_figure(curves: Mapping[int, Sequence[Mapping[str, Any]]], *, title: str = "",
                  metric: Metric = ACCURACY) -> go.Figure:
    """The validation metric against cumulative training seconds, one line per trial with
    a curve (trials whose curve is empty are left out), one marker per epoch."""
    fig = go.Figure()
    for number, curve in curves.items():
        if not curve:
            continue
        fig.add_trace(go.Scatter(
            x=[float(e["seconds"]) for e in curve],
            y=[metric.value(float(e["accuracy"])) for e in curve],
            mode="lines+markers", name=f"trial {number}", marker={"size": 5},
            hovertext=[f"trial {number}, epoch {e.get('epoch', '?')}: {metric.name} "
                       f"{metric.value(float(e['accuracy'])):.4f} at {float(e['seconds']):.3f} s"
                       for e in curve], hoverinfo="text"))
    _layout(fig, title, SECONDS_TITLE, axis_title(metric), hovermode="closest")
    if not metric.maximize:
        fig.update_yaxes(autorange="reversed")
    return fig


def outcomes_figure(counts: Mapping[str, int], *, title: str = "") -> go.Figure:
    """One bar per outcome (completed, pruned, diverged, oom, ...), as counted by
    ``frontier.outcome_counts``."""
    fig = go.Figure(go.Bar(
        x=[_text(k) for k in counts], y=list(counts.values()), text=list(counts.values()),
        textposition="auto", name="trials",
        marker_color=[OUTCOME_COLORS.get(k, OTHER_COLOR) for k in counts]))
    return _layout(fig, title, "outcome", "trials", showlegend=False, height=360)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def importances(study: optuna.Study, *, device: str | None,
                trials: Sequence[FrozenTrial] | None = None
                ) -> tuple[dict[str, float], dict[str, float]]:
    """Optuna's fANOVA param importances over the feasible complete trials of ``device``
    (``None``: every device), separately for accuracy and for training seconds.

    A time-to-accuracy study (one value: seconds) gets ``({}, seconds)``: every complete
    trial reached the target, so accuracy explains nothing. Fewer than two usable trials,
    or an evaluation that fails (e.g. no param shared by all trials, or all values equal),
    gives empty dicts rather than an error: the report says so instead.
    """
    trials = [t for t in (study.get_trials(deepcopy=False) if trials is None else trials)
              if frontier.feasible(t) and _on(t, device) and t.values is not None]
    if len(trials) < 2:
        return {}, {}
    with _quiet_optuna():
        # A copy in memory, so Optuna sees only the trials of this device.
        subset = optuna.create_study(directions=study.directions)
        subset.add_trials(trials)

    def one(index: int) -> dict[str, float]:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            with _quiet_optuna():
                result = optuna.importance.get_param_importances(
                    subset, evaluator=evaluator, target=lambda t: t.values[index])
        except Exception:  # noqa: BLE001 - importance is a nicety; the page says it is missing
            return {}
        values = {str(k): float(v) for k, v in result.items()}
        return values if all(math.isfinite(v) for v in values.values()) else {}

    if len(study.directions) == 1:
        return {}, one(0)
    return one(0), one(1)


def write_html(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """One self-contained HTML file with plotly.js inlined (opens offline)."""
    out = Path(path)
    try:
        fig.write_html(out, include_plotlyjs=True, full_html=True,
                       config={"displaylogo": False, "responsive": True})
    except OSError as e:
        raise UserError(f"{out}: cannot write: {e.strerror or e}") from None
    return out


CHROMIUM = "/usr/bin/chromium"
PNG_NEEDS = "PNG export needs kaleido and a Chromium (pip install kaleido)"


def write_png(fig: go.Figure, path: str | os.PathLike[str], *, scale: float = 2.0) -> Path:
    """A PNG through kaleido (not a dependency of this package: ``pip install kaleido``).
    Kaleido 1.x drives a Chrome/Chromium; when none is configured (``BROWSER_PATH``) the
    Debian one at /usr/bin/chromium is used if present. Without kaleido, or when it cannot
    run, a one-line UserError suggests the HTML output instead."""
    out = Path(path)
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise UserError(f"{out}: {PNG_NEEDS}; or write HTML instead (.html)") from None
    saved = os.environ.get("BROWSER_PATH")
    if saved is None and os.access(CHROMIUM, os.X_OK):
        os.environ["BROWSER_PATH"] = CHROMIUM
    try:
        fig.write_image(out, format="png", scale=scale)
    except Exception as e:  # noqa: BLE001 - kaleido raises many kinds; one line for the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{out}: {PNG_NEEDS}, and it failed: {first}; "
                        f"or write HTML instead (.html)") from None
    finally:
        if saved is None:
            os.environ.pop("BROWSER_PATH", None)
    return out
