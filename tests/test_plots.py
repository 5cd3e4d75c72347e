from __future__ import annotations

import sys
from typing import Any

import optuna
import plotly.graph_objects as go
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from search.errors import UserError
from search.reviewing import frontier, plots
from search.reviewing.verify import Verdict, flag

optuna.logging.set_verbosity(optuna.logging.WARNING)

CPU, GPU = "cpu:x", "cuda:y"
DISTRIBUTIONS = {
    "precision": CategoricalDistribution(("fp32", "bf16", "<b>bold</b>")),
    "frozen_layers": IntDistribution(0, 3),
    "use_mixup_alpha": CategoricalDistribution((False, True)),
    "mixup_alpha": FloatDistribution(0.1, 0.8),
    "lr": FloatDistribution(1e-4, 1.0, log=True),
}


def params(precision: str = "fp32", frozen: int = 0, mixup: float | None = None,
           lr: float = 0.01) -> dict[str, Any]:
    out: dict[str, Any] = {"precision": precision, "frozen_layers": frozen,
                           "use_mixup_alpha": mixup is not None}
    if mixup is not None:
        out["mixup_alpha"] = mixup
    out["lr"] = lr
    return out


def curve(*points: tuple[float, float]) -> list[dict[str, Any]]:
    """(seconds, accuracy) per epoch."""
    return [{"epoch": i + 1, "seconds": s, "accuracy": a, "loss": 1.0}
            for i, (s, a) in enumerate(points)]


def trial(state: TrialState, p: dict[str, Any], values: list[float] | None = None, *,
          outcome: str, device: str = CPU, points: list[tuple[float, float]] | None = None,
          result: dict[str, Any] | None = None) -> FrozenTrial:
    dists = {k: DISTRIBUTIONS[k] for k in p}
    attrs = {"outcome": outcome, "device": device, "curve": curve(*(points or [])),
             "config": dict(p), "result": result or {"best_epoch": len(points or []) or 1,
                                                        "device": {"key": device,
                                                                   "device_type": device[:3]}}}
    return create_trial(state=state, params=p, distributions=dists, values=values,
                        user_attrs=attrs)


def done(acc: float, sec: float, p: dict[str, Any], **kw: Any) -> FrozenTrial:
    kw.setdefault("outcome", "completed")
    kw.setdefault("points", [(sec / 2, acc - 0.1), (sec, acc)])
    return trial(TrialState.COMPLETE, p, [acc, sec], **kw)


def pruned(p: dict[str, Any], points: list[tuple[float, float]], **kw: Any) -> FrozenTrial:
    kw.setdefault("outcome", "pruned")
    return trial(TrialState.PRUNED, p, None, points=points, **kw)


def make_study(trials: list[FrozenTrial], directions: list[str] | None = None,
               name: str | None = None, **attrs: Any) -> optuna.Study:
    study = optuna.create_study(directions=directions or ["maximize", "minimize"],
                                study_name=name)
    for t in trials:
        study.add_trial(t)
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    return study


def mixed_study(name: str | None = None) -> optuna.Study:
    """Front by hand on cpu:x: 1, 0, 3; dominated: 2; pruned: 4 (at 6 s, best 0.6).
    Left out: 5 (diverged), 6 (pruned before an epoch), 7 (another device), 8 (pruned as
    diverged), 9 (failed)."""
    return make_study([
        done(0.90, 10.0, params("fp32", 0, None, 0.01)),                     # 0
        done(0.80, 5.0, params("bf16", 2, 0.31, 0.02)),                      # 1
        done(0.85, 25.0, params("<b>bold</b>", 1, 0.5, 0.03)),               # 2
        done(0.95, 20.0, params("fp32", 3, 0.2, 0.04)),                      # 3
        pruned(params("bf16", 1, None, 0.5), [(3.0, 0.6), (6.0, 0.55)]),     # 4
        done(0.10, 1.0, params("fp32", 0, None, 0.9), outcome="diverged"),   # 5
        pruned(params("fp32", 0, None, 0.6), []),                            # 6
        done(0.99, 1.0, params("bf16", 0, None, 0.01), device=GPU),          # 7
        pruned(params("fp32", 0, None, 0.7), [(1.0, 0.2)], outcome="diverged"),  # 8
        trial(TrialState.FAIL, params("fp32", 0, None, 0.8), outcome="failed"),  # 9
    ], name=name, recipe={"name": name or "mixed", "space": "lr: {low: 1.0e-4}\nx: 1\n"},
        objective="pareto")


def tta_study(name: str = "tta") -> optuna.Study:
    """Time-to-accuracy (target 0.9): values [seconds]; accuracy reached in the result."""
    def reached(sec: float, acc: float, p: dict[str, Any]) -> FrozenTrial:
        return trial(TrialState.COMPLETE, p, [sec], outcome="completed",
                     points=[(sec / 2, 0.5), (sec, acc)],
                     result={"accuracy": acc, "best_epoch": 2, "device": {"key": CPU}})
    return make_study([
        reached(4.0, 0.91, params("fp32", 0, None, 0.01)),
        reached(3.0, 0.93, params("bf16", 1, None, 0.02)),
        reached(5.0, 0.95, params("fp32", 2, 0.3, 0.03)),
        reached(6.0, 0.92, params("bf16", 3, None, 0.05)),
        pruned(params("fp32", 0, None, 0.5), [(2.0, 0.4), (4.0, 0.7)], outcome="unreached"),
        pruned(params("fp32", 0, None, 0.6), [(1.0, 0.3)], outcome="diverged"),
    ], directions=["minimize"], name=name, objective="time-to-accuracy", target=0.9,
        recipe={"name": name, "objective": "time-to-accuracy", "target": 0.9})


def varied_study(n: int = 12) -> optuna.Study:
    """Accuracy rises with lr, seconds with frozen_layers (inverted) and precision."""
    trials = []
    for i in range(n):
        lr = 10 ** (-3 + 2 * i / (n - 1))
        frozen = i % 4
        precision = "bf16" if i % 3 else "fp32"
        acc = 0.5 + 0.2 * (i / (n - 1))
        sec = 10.0 - 2.0 * frozen + (1.0 if precision == "fp32" else 0.0)
        trials.append(done(acc, sec, params(precision, frozen, None, lr)))
    return make_study(trials)


def _numbers(markers: tuple[plots.Marker, ...]) -> list[int]:
    return [m.number for m in markers]


# pareto_data ------------------------------------------------------------------------------

def test_front_dominated_and_pruned_sets() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU)
    assert data.device == CPU
    assert _numbers(data.front) == [1, 0, 3]
    assert _numbers(data.dominated) == [2]
    assert _numbers(data.pruned) == [4]


def test_pruned_point_is_last_seconds_and_best_accuracy_so_far() -> None:
    (marker,) = plots.pareto_data(mixed_study().trials, device=CPU).pruned
    assert (marker.seconds, marker.accuracy, marker.outcome) == (6.0, 0.6, "pruned")


def test_infeasible_failed_and_curveless_trials_are_left_out() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU)
    drawn = {m.number for m in (*data.front, *data.dominated, *data.pruned)}
    assert drawn.isdisjoint({5, 6, 8, 9})


def test_default_device_is_the_one_with_most_feasible_trials() -> None:
    assert plots.pareto_data(mixed_study().trials, device=None).device == CPU


def test_device_filter_never_mixes_hardware() -> None:
    data = plots.pareto_data(mixed_study().trials, device=GPU)
    assert (_numbers(data.front), data.dominated, data.pruned) == ([7], (), ())


def test_unknown_device_is_a_user_error_naming_the_devices() -> None:
    with pytest.raises(UserError, match=r"'tpu:z'.*cpu:x, cuda:y"):
        plots.pareto_data(mixed_study().trials, device="tpu:z")


def test_step_line_is_the_fronts_extended_to_the_slowest_point() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU)
    assert data.step_x == (5.0, 10.0, 10.0, 20.0, 20.0, 25.0)
    assert data.step_y == (0.80, 0.80, 0.90, 0.90, 0.95, 0.95)
    front = frontier.pareto_front(frontier.points(mixed_study().trials, device=CPU))
    assert data.step_x == tuple(frontier.step_line(front, until=25.0)[0])


def test_hover_names_trial_outcome_values_and_every_param_readably() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU)
    by_number = {m.number: m for m in (*data.front, *data.dominated, *data.pruned)}
    one = by_number[1].hover
    assert "trial 1 · completed" in one
    assert "accuracy 0.8000" in one and "5.000 s" in one
    assert "precision=bf16, frozen_layers=2, mixup_alpha=0.31, lr=0.02" in one
    assert "mixup_alpha=off" in by_number[0].hover  # the trick's switch, folded in
    assert "trial 4 · pruned" in by_number[4].hover


def test_hover_escapes_user_strings() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU)
    (two,) = data.dominated
    assert "precision=&lt;b&gt;bold&lt;/b&gt;" in two.hover and "<b>" not in two.hover


def test_param_items_fold_the_switch_of_an_optional_trick() -> None:
    assert plots.param_items({"use_mixup_alpha": False, "lr": 0.012345}) == [
        "mixup_alpha=off", "lr=0.0123"]
    assert plots.param_items({"use_mixup_alpha": True, "mixup_alpha": 0.3}) == ["mixup_alpha=0.3"]


def test_colour_values_follow_color_by_with_na_for_missing() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU, color_by="mixup_alpha")
    assert [m.color for m in data.front] == ["0.31", "n/a", "0.2"]
    assert data.colors == ("0.2", "0.31", "0.5", "n/a")
    by_precision = plots.pareto_data(mixed_study().trials, device=CPU, color_by="precision")
    assert [m.color for m in by_precision.front] == ["bf16", "fp32", "fp32"]
    assert set(by_precision.colors) == {"bf16", "fp32", "<b>bold</b>"}


def test_no_color_by_gives_no_colour_values() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU)
    assert data.colors == () and data.color_by is None


def test_unknown_color_by_is_a_user_error_naming_it_and_the_params() -> None:
    with pytest.raises(UserError, match=r"'optimiser'.*frozen_layers, lr, mixup_alpha"):
        plots.pareto_data(mixed_study().trials, device=CPU, color_by="optimiser")


def test_time_to_accuracy_front_uses_accuracy_reached() -> None:
    data = plots.pareto_data(tta_study().trials, device=None)
    assert [(m.number, m.accuracy) for m in data.front] == [(1, 0.93), (2, 0.95)]
    assert _numbers(data.dominated) == [0, 3]
    assert [(m.number, m.outcome) for m in data.pruned] == [(4, "unreached")]


def test_empty_study_gives_empty_data() -> None:
    data = plots.pareto_data([], device=None)
    assert (data.device, data.front, data.step_x) == (None, (), ())
    assert len(plots.pareto_figure(data).data) == 0


# importances ------------------------------------------------------------------------------

def test_importances_for_both_targets() -> None:
    acc, sec = plots.importances(varied_study(), device=CPU)
    assert set(acc) == set(sec) == {"precision", "frozen_layers", "use_mixup_alpha", "lr"}
    assert max(acc, key=acc.get) == "lr"
    assert max(sec, key=sec.get) == "frozen_layers"
    assert sum(acc.values()) == pytest.approx(1.0) and sum(sec.values()) == pytest.approx(1.0)


def test_importances_need_two_usable_trials_on_the_device() -> None:
    assert plots.importances(varied_study(), device=GPU) == ({}, {})
    assert plots.importances(mixed_study(), device=GPU) == ({}, {})  # one GPU trial


def test_importances_of_a_time_to_accuracy_study_are_for_seconds_only() -> None:
    acc, sec = plots.importances(tta_study(), device=CPU)
    assert acc == {} and sec


def test_importances_failure_gives_empty_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no")

    monkeypatch.setattr(optuna.importance, "get_param_importances", boom)
    assert plots.importances(varied_study(), device=CPU) == ({}, {})


# figures ----------------------------------------------------------------------------------

def _names(fig: go.Figure) -> list[str]:
    return [t.name for t in fig.data]


def test_pareto_figure_traces_and_styles() -> None:
    fig = plots.pareto_figure(plots.pareto_data(mixed_study().trials, device=CPU), title="t")
    assert _names(fig) == ["front (best accuracy within x)", "front", "dominated", "pruned"]
    line, front, dominated, pruned_ = fig.data
    assert line.line.shape == "hv" and line.mode == "lines"
    assert list(front.customdata) == [1, 0, 3] and front.opacity == 1.0
    assert dominated.opacity == pruned_.opacity == plots.FADED
    assert pruned_.marker.symbol == "circle-open"
    assert fig.layout.xaxis.type != "log"


def test_pareto_figure_one_trace_per_colour_and_set_with_one_legend_entry_each() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU, color_by="precision")
    fig = plots.pareto_figure(data)
    # the step line, 3 legend keys, then front: bf16, fp32; dominated: <b>bold</b>; pruned: bf16
    assert len(fig.data) == 1 + 3 + 4
    keys = [t for t in fig.data if t.showlegend is not False and t.legendgroup]
    assert [t.legendgroup for t in keys] == list(data.colors)
    assert [t.name for t in keys] == ["&lt;b&gt;bold&lt;/b&gt;", "bf16", "fp32"]
    assert _names(fig)[4:] == ["front: bf16", "front: fp32", "dominated: &lt;b&gt;bold&lt;/b&gt;",
                               "pruned: bf16"]
    assert all(t.legendgroup in data.colors for t in fig.data[1:])
    assert fig.data[4].marker.color == fig.data[7].marker.color  # bf16 in both sets
    assert fig.layout.legend.title.text == "precision"


def test_pareto_figure_log_time() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU)
    assert plots.pareto_figure(data, log_time=True).layout.xaxis.type == "log"
    assert plots.pareto_figure(data, log_time=False).layout.xaxis.type != "log"


def test_pareto_figure_goes_log_when_the_times_span_more_than_30x() -> None:
    data = plots.pareto_data(mixed_study().trials, device=CPU)
    seconds = [m.seconds for m in (*data.front, *data.dominated, *data.pruned)]
    wide = max(seconds) > plots.LOG_SPAN * min(seconds)
    assert plots.auto_log_time(data) == wide
    assert (plots.pareto_figure(data).layout.xaxis.type == "log") == wide
    fast = data.front[0]._replace(seconds=min(seconds) / 100)
    wider = data._replace(front=(fast, *data.front[1:]))
    assert plots.pareto_figure(wider).layout.xaxis.type == "log"


def test_pareto_figure_verdicts_error_bars_and_flags() -> None:
    verdicts = flag([Verdict(0, (0.90, 10.0), [(0.80, 25.0), (0.82, 26.0)]),
                     Verdict(3, (0.95, 20.0), [(0.95, 20.5), (0.96, 19.5)])])
    # Trial 0's single run beat its repeats by far (0.90 vs 0.80, 0.82): also optimistic.
    assert verdicts[0].flags == ["dominated", "optimistic"] and verdicts[1].flags == []
    fig = plots.pareto_figure(plots.pareto_data(mixed_study().trials, device=CPU),
                              verdicts=verdicts)
    assert _names(fig)[-2:] == ["re-run mean ± std", "flagged"]
    means, flagged = fig.data[-2:]
    assert list(means.x) == [v.seconds_mean for v in verdicts]
    assert list(means.error_x.array) == [v.seconds_std for v in verdicts]
    assert list(means.error_y.array) == [v.accuracy_std for v in verdicts]
    assert list(flagged.y) == [verdicts[0].accuracy_mean]


def test_hypervolume_figure_x_is_cumulative_seconds() -> None:
    trials = mixed_study().trials
    history = frontier.hypervolume_history(trials, (0.0, 30.0), device=CPU)
    fig = plots.hypervolume_figure(history)
    assert len(fig.data) == 1
    assert list(fig.data[0].x) == [h[1] for h in history]
    assert list(fig.data[0].y) == [h[2] for h in history]


def test_importance_figure_two_bar_charts_most_important_on_top() -> None:
    fig = plots.importance_figure({"lr": 0.7, "precision": 0.3}, {"frozen_layers": 1.0})
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert list(fig.data[0].y) == ["precision", "lr"]  # drawn bottom-up
    assert fig.data[0].xaxis == "x" and fig.data[1].xaxis == "x2"


def test_importance_figure_says_when_a_panel_is_missing() -> None:
    fig = plots.importance_figure({}, {"lr": 1.0})
    titles = [a.text for a in fig.layout.annotations]
    assert "for accuracy (not available)" in titles and "for training seconds" in titles
    assert fig.layout.xaxis.visible is False and fig.layout.xaxis2.visible is not False


def test_curves_figure_one_line_per_trial_with_a_curve() -> None:
    curves = frontier.curves(mixed_study().trials, [0, 1, 6])
    fig = plots.curves_figure(curves)
    assert _names(fig) == ["trial 0", "trial 1"]
    assert list(fig.data[0].x) == [5.0, 10.0]


def test_outcomes_figure() -> None:
    counts = frontier.outcome_counts(mixed_study().trials)
    fig = plots.outcomes_figure(counts)
    assert len(fig.data) == 1
    assert dict(zip(fig.data[0].x, fig.data[0].y, strict=True)) == counts


# files ------------------------------------------------------------------------------------

def test_write_html_inlines_plotly(tmp_path: Any) -> None:
    out = plots.write_html(plots.outcomes_figure({"completed": 1}), tmp_path / "f.html")
    text = out.read_text(encoding="utf-8")
    assert out.stat().st_size > 1_000_000  # plotly.js itself
    assert "cdn.plot.ly" not in text.split("</script>")[-2][-2000:]
    assert "Plotly.newPlot" in text


def test_write_html_to_a_missing_folder_is_a_user_error(tmp_path: Any) -> None:
    with pytest.raises(UserError, match="cannot write"):
        plots.write_html(go.Figure(), tmp_path / "no" / "f.html")


def test_write_png_without_kaleido_is_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Any) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido -> ImportError
    with pytest.raises(UserError, match="PNG export needs kaleido and a Chromium") as e:
        plots.write_png(go.Figure(), tmp_path / "f.png")
    assert "\n" not in str(e.value) and "HTML" in str(e.value)


def test_write_png_failure_is_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Any) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", object())

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("\nKaleido requires Google Chrome to be installed.\n\nmore")

    monkeypatch.setattr(go.Figure, "write_image", fail)
    with pytest.raises(UserError, match="Chromium.*Chrome to be installed.*HTML") as e:
        plots.write_png(go.Figure(), tmp_path / "f.png")
    assert "\n" not in str(e.value)


def test_write_png_with_kaleido(tmp_path: Any) -> None:
    pytest.importorskip("kaleido", reason="kaleido is optional (pip install kaleido)")
    try:
        out = plots.write_png(plots.outcomes_figure({"completed": 1}), tmp_path / "f.png")
    except UserError as e:
        pytest.skip(str(e))  # kaleido without a runnable Chromium
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_with_a_floor_the_accuracy_axis_shows_the_worth_having_range() -> None:
    trials = mixed_study().trials
    everything = plots.pareto_data(trials, device=CPU)
    accuracies = sorted(m.accuracy for m in (*everything.front, *everything.dominated))
    floor = accuracies[len(accuracies) // 2]  # half of the points fall below it
    data = plots.pareto_data(trials, device=CPU, floor=floor)
    assert data.below
    fig = plots.pareto_figure(data, title="t")
    low, high = fig.layout.yaxis.range
    best = max(m.accuracy for m in data.front)
    assert low < floor <= best < high and best - low < best - accuracies[0]
    assert f"{len(data.below)} below the floor, under the axis" in fig.layout.title.subtitle.text
    assert plots.pareto_figure(everything).layout.yaxis.range is None  # no floor: every point
