"""examples/train_with_best.py, the README's plain PyTorch loop, runs on an exported config
as a user runs it: a separate process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from search.reviewing import export as exporter
from search.training.config import TrainConfig
from tests.test_choose import RECIPE

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "train_with_best.py"
LINE = re.compile(r"^epoch (\d+)/(\d+): validation accuracy (\d+\.\d+)$")
TEST_LINE = re.compile(r"^test accuracy (\d+\.\d+)$")

CONFIGS = {
    "plain": TrainConfig(optimizer="adam", lr=0.002, batch_size=64, epochs=2,
                         frozen_layers=1),
    # Every building block the loop uses, switched on.
    "tricks": TrainConfig(optimizer="momentum", lr=0.2, lr_scaling="linear", batch_size=32,
                          epochs=2, frozen_layers=2, lr_schedule="cosine", warmup=0.1,
                          label_smoothing=0.1, mixup_alpha=0.2, cutmix_alpha=0.5,
                          precision="bf16", channels_last=True, weight_decay=1e-4,
                          dropout=0.1, seed=1),
}


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    # One thread: the tests share 2 cores. SEARCH_CACHE (set by conftest) is inherited, so
    # the pretrained checkpoint is the tests' own.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def export(config: TrainConfig, path: Path, best_epoch: int) -> Path:
    trial = create_trial(
        params={"lr": config.lr}, distributions={"lr": FloatDistribution(1e-4, 1.0)},
        values=[0.95, 1.0],
        user_attrs={"config": config.to_dict(), "outcome": "completed",
                    "result": {"accuracy": 0.95, "seconds": 1.0, "best_epoch": best_epoch}})
    return exporter.write(exporter.export_record("mnist", trial, RECIPE), path)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_example_trains_an_exported_config(name: str, tmp_path: Path) -> None:
    path = export(CONFIGS[name], tmp_path / f"{name}.yaml", best_epoch=2)
    proc = run_example(str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    *lines, last = proc.stdout.strip().splitlines()
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [(int(m[1]), int(m[2])) for m in matches] == [(1, 2), (2, 2)]
    accuracies = [float(m[3]) for m in matches]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    # The pretrained backbone fine-tuned for 2 epochs is far above chance (0.2).
    assert max(accuracies) > 0.5, accuracies
    test = TEST_LINE.match(last)
    assert test and float(test[1]) > 0.5, last


def test_example_stops_where_the_exported_point_was_measured(tmp_path: Path) -> None:
    # A 6-epoch schedule whose point was measured after epoch 1: the loop trains 1 epoch.
    path = export(CONFIGS["plain"].replace(epochs=6), tmp_path / "early.yaml", best_epoch=1)
    proc = run_example(str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [LINE.match(line).groups()[:2] for line in lines[:-1]] == [("1", "1")]


def test_example_without_arguments_prints_usage(tmp_path: Path) -> None:
    proc = run_example()
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("usage:")
    assert "train_with_best.py" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.usefixtures("one_thread")  # the example's process runs one thread too
@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_example_lands_on_the_exported_point(name: str, tmp_path: Path) -> None:
    """What the search measured is what the user's loop gets: the engine trains the config
    on the default study's task, its point is exported, and the example's plain loop,
    loading that file in another process, prints the same validation accuracy at the
    same epoch and the same test accuracy (on the CPU, bit for bit)."""
    from search.training.data import DataSpec
    from search.training.engine import train
    from search.training.models import ModelSpec

    config = CONFIGS[name].replace(epochs=3)
    measured = train(config, DataSpec("mnist5k", classes=(5, 6, 7, 8, 9), image_size=14),
                     ModelSpec("cnn", width=16, weights="pretrained:mnist5k-0-4"),
                     device="cpu")
    trial = create_trial(
        params={"lr": config.lr}, distributions={"lr": FloatDistribution(1e-4, 1.0)},
        values=[measured.accuracy, measured.seconds],
        user_attrs={"config": config.to_dict(), "outcome": "completed",
                    "result": json.loads(json.dumps(measured.to_dict()))})  # as stored
    path = exporter.write(exporter.export_record("mnist", trial, RECIPE), tmp_path / "m.yaml")
    proc = run_example(str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    *lines, last = proc.stdout.strip().splitlines()
    epochs = [LINE.match(line) for line in lines]
    assert len(epochs) == measured.best_epoch  # it stopped where the point was measured
    assert float(epochs[-1][3]) == pytest.approx(measured.accuracy, abs=1e-9)
    assert float(TEST_LINE.match(last)[1]) == pytest.approx(measured.test_accuracy, abs=1e-9)


@pytest.mark.usefixtures("one_thread")
def test_a_data_parallel_config_lands_on_its_point_under_torchrun(tmp_path: Path) -> None:
    """The engine trains a config in 2 processes (DistributedDataParallel, Gloo); the
    exported file, run by the example under `torchrun --nproc_per_node 2`, prints the
    same validation accuracy at the same epoch and the same test accuracy."""
    from search.training.data import DataSpec
    from search.training.engine import train
    from search.training.models import ModelSpec

    config = TrainConfig(optimizer="adam", lr=0.002, batch_size=64, epochs=2,
                         frozen_layers=1, mixup_alpha=0.2, data_parallel=2)
    measured = train(config, DataSpec("mnist5k", classes=(5, 6, 7, 8, 9), image_size=14),
                     ModelSpec("cnn", width=16, weights="pretrained:mnist5k-0-4"),
                     device="cpu")
    assert measured.outcome == "completed" and measured.device["processes"] == 2
    trial = create_trial(
        params={"lr": config.lr}, distributions={"lr": FloatDistribution(1e-4, 1.0)},
        values=[measured.accuracy, measured.seconds],
        user_attrs={"config": config.to_dict(), "outcome": "completed",
                    "result": json.loads(json.dumps(measured.to_dict()))})
    path = exporter.write(exporter.export_record("mnist", trial, RECIPE), tmp_path / "m.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           "2", str(SCRIPT), str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *lines, last = proc.stdout.strip().splitlines()
    epochs = [m for m in map(LINE.match, lines) if m]
    assert len(epochs) == measured.best_epoch
    assert float(epochs[-1][3]) == pytest.approx(measured.accuracy, abs=1e-9)
    assert float(TEST_LINE.match(last)[1]) == pytest.approx(measured.test_accuracy, abs=1e-9)
