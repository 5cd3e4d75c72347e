from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from search.errors import UserError
from search.reviewing import report_html
from search.reviewing.verify import Verdict, flag
from tests import browser
from tests.test_plots import CPU, GPU, mixed_study, tta_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

NASTY = "<script>alert('x')</script>&"
PLOT = 'class="plotly-graph-div"'


def _rows(page: str, heading: str) -> list[str]:
    """The body rows of the first table after ``heading``."""
    section = page.split(f"<h2>{heading}</h2>", 1)[1].split("</section>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>", 1)[1])


@pytest.fixture(scope="module")
def page() -> str:
    return report_html.build(mixed_study(name=NASTY), device=CPU)


def test_every_section_heading(page: str) -> None:
    for heading in report_html.SECTIONS:
        if heading != "Verification":
            assert f"<h2>{heading}</h2>" in page
    assert "<h2>Verification</h2>" not in page


def test_plotly_js_inlined_once(page: str) -> None:
    assert page.count("<script src=") == 0
    # the bundle defines its version banner once; figures only call newPlot
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    body = page.split("</head><body>", 1)[1]  # after the inlined bundle
    assert body.count("Plotly.newPlot(") == body.count(PLOT) == 5


def test_front_table_rows_are_the_front_fastest_first(page: str) -> None:
    rows = _rows(page, "Front configs")
    assert [re.search(r"<td>(?:<span[^>]*>)?(\d+)", r).group(1) for r in rows] == ["1", "0", "3"]
    assert "0.8000" in rows[0] and "5.000" in rows[0]
    assert "precision=bf16, frozen_layers=2, mixup_alpha=0.31, lr=0.02" in rows[0]
    assert "(knee)" in "".join(rows)


def test_user_strings_are_escaped(page: str) -> None:
    assert NASTY not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in page  # title, h1


def test_recipe_as_yaml_in_pre(page: str) -> None:
    recipe = page.split("<h2>Recipe</h2>", 1)[1]
    assert "<pre>" in recipe and "space: |" in recipe and "lr: {low: 1.0e-4}" in recipe


def test_one_device_is_shown_with_a_note_about_the_others(page: str) -> None:
    assert "holds trials from 2 devices; showing cpu:x only" in page
    devices = "".join(_rows(page, "Devices"))
    assert "cpu:x <b>(shown)</b>" in devices and GPU in devices


def test_summary_counts_trials_by_outcome(page: str) -> None:
    assert "10 (completed 5, diverged 2, pruned 2, failed 1)" in page


def test_other_device_page() -> None:
    page = report_html.build(mixed_study(), device=GPU)
    assert [r.count("<td") for r in _rows(page, "Front configs")] == [6]
    assert "Importance for accuracy is not available" in page  # one trial on that device


def test_unknown_device_is_a_user_error() -> None:
    with pytest.raises(UserError, match="tpu:z"):
        report_html.build(mixed_study(), device="tpu:z")


def test_verdicts_add_a_section_and_error_bars() -> None:
    verdicts = flag([Verdict(0, (0.90, 10.0), [(0.80, 25.0), (0.82, 26.0)]),
                     Verdict(3, (0.95, 20.0), [(0.95, 20.5), (0.96, 19.5)])])
    page = report_html.build(mixed_study(), verdicts=verdicts)
    assert "<h2>Verification</h2>" in page
    rows = _rows(page, "Verification")
    assert len(rows) == 2 and "dominated" in rows[0] and "ok" in rows[1]
    assert "re-run mean" in page  # the trace with the error bars


def test_time_to_accuracy_page() -> None:
    page = report_html.build(tta_study())
    assert "time-to-accuracy" in page and "target accuracy 0.9" in page
    assert [re.search(r"<td>(?:<span[^>]*>)?(\d+)", r).group(1)
            for r in _rows(page, "Front configs")] == ["1", "2"]
    assert "only the importance for training seconds is shown" in page
    assert "Importance for training seconds is not available" not in page
    assert page.count(PLOT) == 5


def test_empty_study_page() -> None:
    page = report_html.build(optuna.create_study(directions=["maximize", "minimize"]))
    assert "no completed trials yet" in page.lower()
    assert page.count(PLOT) == 1  # the (empty) front figure


def test_write_saves_utf8(tmp_path: Path) -> None:
    out = report_html.write(tta_study(), tmp_path / "r.html")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(UserError, match="cannot write"):
        report_html.write(tta_study(), tmp_path / "missing" / "r.html")


@pytest.mark.parametrize("make", [lambda: mixed_study(name=NASTY), tta_study],
                         ids=["pareto", "time-to-accuracy"])
def test_page_renders_in_chromium_without_errors(make, tmp_path: Path) -> None:
    browser.require()
    html = report_html.build(make())
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    expected = html.count(PLOT)
    assert expected == 5
    seen = browser.render(path, expect_plots=expected)
    assert seen.page_errors == []
    assert seen.console_errors == []
    assert (seen.plots, seen.plots_with_svg) == (expected, expected)
