"""The benchmark scripts still run, at toy sizes (they measure nothing here: speed lives in
``benchmarks/`` and ``docs/benchmarks.md``). Each must end with its one summary line and
write its JSON record."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import tasks

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str, out: Path) -> tuple[str, dict]:
    """Run ``benchmarks/SCRIPT.py ARGS`` on one CPU thread; its last line and JSON."""
    done = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--device", "cpu",
                           "--threads", "1", "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1], json.loads(out.read_text())


def test_overhead_on_the_cifar_sized_task(tmp_path: Path) -> None:
    last, record = bench("overhead", "--task", "cifar-sized-small", "--model", "cnn",
                         "--rounds", "1", "--epochs", "1", out=tmp_path / "o.json")
    assert re.fullmatch(r"ratio: \d+\.\d{3}", last)
    assert record["settings"]["task"] == "cifar-sized-small"
    assert record["flops_per_sample"] > 0
    assert record["engine_tflops"][1] is None  # no share of peak on a CPU


def test_speedup_with_a_tiny_search(tmp_path: Path) -> None:
    last, record = bench("speedup", "--search-seconds", "8", "--repeats", "1",
                         out=tmp_path / "s.json")
    assert re.fullmatch(r"speedup: (\d+\.\d{2}|nan)", last), last
    if last != "speedup: nan":
        assert all(r["tflops"] > 0 for r in record["runs"])


def test_efficiency_with_a_tiny_budget(tmp_path: Path) -> None:
    last, record = bench("efficiency", "--budget", "2", "--seeds", "1", "--quick",
                         out=tmp_path / "e.json")
    assert re.fullmatch(r"budget_ratio_vs_random: (\d+\.\d{3}|inf|nan)", last), last
    assert set(record["runs"]) == {"a: tpe + pareto-sha", "b: nsga2", "c: random"}
    assert (tmp_path / "e.html").is_file()  # the curves


def test_the_cifar_sized_task_is_cifar_shaped_and_learnable() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = tasks.make(1200)
    assert x.shape == (1200, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert set(y.tolist()) == set(range(10))
    assert torch.equal(x, tasks.make(1200)[0])  # made, not downloaded: the same every time
    # Learnable: even a linear model on a quarter-size grey image (contrast normalised,
    # since ink and paper colours are random) beats chance (0.1) by far on held-out images.
    grey = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 2).flatten(1)
    grey = (grey - grey.mean(1, keepdim=True)).abs()
    fit = LogisticRegression(max_iter=300).fit(grey[:1000].numpy(), y[:1000].numpy())
    assert fit.score(grey[1000:].numpy(), y[1000:].numpy()) > 0.3
