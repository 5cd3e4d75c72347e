"""The benchmark scripts still run, at toy sizes (they measure nothing here: speed lives in
``benchmarks/`` and ``docs/benchmarks.md``). Each must end with its one summary line and
write its JSON record."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from benchmarks import efficiency, gpu_check, peers, tasks
from search.reviewing import frontier

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


def test_efficiency_runs_every_available_arm_and_scores_all_its_points(tmp_path: Path
                                                                       ) -> None:
    """Arms whose peer is missing (no syne-tune; no optunahub or no local registry in
    $OPTUNAHUB_REGISTRY) are skipped with a reason; every other arm searched, and its
    hypervolume is that of all its measured points within the budget."""
    last, record = bench("efficiency", "--budget", "2", "--seeds", "1", "--quick",
                         out=tmp_path / "e.json")
    assert re.fullmatch(r"hypervolume_ratio_vs_best_peer: (\d+\.\d{3}|inf|nan)", last), last
    runs, skipped = record["runs"], record["skipped"]
    assert sorted([*runs, *skipped]) == sorted(efficiency.ARMS)
    assert ("b: moasha" in runs) == (importlib.util.find_spec("syne_tune") is not None)
    hub = importlib.util.find_spec("optunahub") is not None and os.environ.get(peers.HUB_ENV)
    assert ("c: hub-median" in runs) == bool(hub)
    reference = tuple(record["reference"])
    for arm, (run,) in runs.items():
        first = run["records"][0]
        assert first["number"] == 0 and first["point"] is not None, arm  # the baseline
        spent, points = 0.0, []
        for r in run["records"]:
            spent += r["spent"]
            if spent <= 2 and r["point"] is not None:
                points.append(frontier.Point(r["number"], *r["point"]))
        assert run["hypervolume"] == pytest.approx(frontier.hypervolume(points, reference))
    assert (tmp_path / "e.html").is_file()  # the curves


def _peer_pruner(name: str) -> Any:
    if name == "ours":
        from search.tuning.pruning import make_pruner

        return make_pruner({"name": "pareto-sha", "eta": 3, "min_resource": 0.111,
                            "resource": "fraction"})
    try:
        if name == "moasha":
            return peers.MOASHAPruner(eta=3, min_resource=0.111, max_resource=1.0,
                                      resource="fraction", seed=0)
        return peers.HubMedianPruner(peers.load_hub(None))
    except peers.Unavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name", ["ours", "moasha", "hub-median"])
def test_each_pruner_stops_a_trial_every_other_trial_dominates(name: str) -> None:
    """The adapters drive the peers through our pruner's interface (rungs on the fraction
    of the schedule, as the shipped recipe): after four good trials, a trial slower and
    less accurate at every epoch is stopped before its last."""
    pruner = _peer_pruner(name)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                pruner=getattr(pruner, "study_pruner", None))

    def run(accuracy: float, seconds: float) -> str | None:
        trial, curve = study.ask(), []
        trial.set_user_attr("curve", curve)
        for epoch in range(1, 4):
            curve.append({"epoch": epoch, "fraction": epoch / 3, "seconds": seconds * epoch,
                          "loss": 1.0, "accuracy": accuracy + 0.01 * epoch})
            trial.set_user_attr("curve", curve)
            # As in the objective, the last epoch is not judged.
            reason = pruner.prune(study, trial, curve) if epoch < 3 else None
            if reason:
                break
        study.tell(trial, [max(e["accuracy"] for e in curve), curve[-1]["seconds"]])
        return reason

    for i in range(4):
        run(0.9 + 0.01 * i, 0.1 + 0.01 * i)
    assert run(0.3, 1.0)


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


@pytest.mark.parametrize("path", list(gpu_check.PATHS))
def test_every_gpu_check_path_runs_at_toy_size(path: str, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    from search.training.config import TrainConfig
    from search.training.engine import train
    from search.training.models import ModelSpec
    from search.training.tricks import compile as compiler
    from tests.usermodels import small_data

    monkeypatch.setattr(compiler, "OPTIONS", {"backend": "eager"})  # no C++ build on CPU
    cfg = TrainConfig(epochs=1, batch_size=32, **gpu_check.PATHS[path])
    data, spec, dev = small_data(), ModelSpec("cnn", width=8), torch.device("cpu")
    assert gpu_check.conv_dtypes(data, cfg, spec, dev)
    assert train(cfg, data, spec, device=dev, warm=False).outcome == "completed"
