"""Open a report in headless Chromium (Playwright) and say what rendered and what failed.

No browser is downloaded: Playwright drives the system Chromium (Debian's
/usr/bin/chromium, installed by scripts/system-deps.sh). Where it or Playwright is missing
the browser tests skip, except under CI (``CI=true``), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SEARCH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


@dataclass
class Rendered:
    """What a page did: console errors, uncaught page errors, plots drawn."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    plots: int = 0  # elements with class js-plotly-plot (Plotly.newPlot ran on them)
    plots_with_svg: int = 0  # of those, how many hold a .main-svg (something was drawn)


def missing() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/system-deps.sh)"
    return None


def require() -> None:
    """Skip the calling test when no browser can run, or fail it under CI=true."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test cannot run under CI: {reason}")
    pytest.skip(reason)


def render(path: Path, *, expect_plots: int, screenshot: Path | None = None,
           width: int = 1280) -> Rendered:
    """Open ``path`` (a file:// URL), wait until ``expect_plots`` plots hold an SVG (or
    the timeout), optionally save a full-page PNG, and report what happened."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    seen = Rendered()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: seen.console_errors.append(m.text)
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
            page.goto(path.resolve().as_uri(), wait_until="load", timeout=TIMEOUT_MS)
            try:
                page.wait_for_function(
                    "n => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n"
                    " && document.querySelectorAll('.js-plotly-plot').length >= n",
                    arg=expect_plots, timeout=TIMEOUT_MS)
            except PlaywrightTimeout:
                pass  # the counts below show what is missing
            seen.plots = page.locator(".js-plotly-plot").count()
            seen.plots_with_svg = page.locator(".js-plotly-plot:has(.main-svg)").count()
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen
