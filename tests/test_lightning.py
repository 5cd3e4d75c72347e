"""PyTorch Lightning: a LightningModule searched through search.training.lightning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner

from search.cli import cli
from search.training.config import TrainConfig
from search.training.run import Run, run_trainer

L = pytest.importorskip("lightning")  # the `lightning` extra; CI installs it with `test`
from search.training import lightning as search_lightning  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


class Watched(L.LightningModule):
    """Records whether the run's clock ran in each training and validation step."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.config, self.net = config, torch.nn.Linear(4, 2)
        self.report: Any = None
        self.seen: dict[str, set[bool]] = {"train": set(), "val": set()}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen["train"].add(self.report._timing)
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.seen["val"].add(self.report._timing)
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        return self.config.build_optimizer(self)


def _loader() -> Any:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)


def _fit(run: Run) -> None:
    module = Watched(run.config)
    trainer = search_lightning.trainer(run, monitor="val_acc")
    module.report = next(c for c in trainer.callbacks
                         if isinstance(c, search_lightning.Report))
    trainer.fit(module, _loader(), _loader())
    run.params["seen"] = module.seen


def test_training_steps_are_timed_and_validation_is_not() -> None:
    run = Run(TrainConfig(epochs=3, lr=0.1), torch.device("cpu"))
    _fit(run)
    assert run.params["seen"] == {"train": {True}, "val": {False}}
    assert [p["epoch"] for p in run.curve] == [1, 2, 3] and run.seconds > 0


def test_the_study_stops_a_fit_where_its_pruner_says() -> None:
    result = run_trainer(_fit, TrainConfig(epochs=5), device="cpu", warm=False,
                         decide=lambda step, *_: step == 2 and "pruned at rung")
    assert (result.outcome, result.epochs_run, result.reason) == ("pruned", 2, "pruned at rung")


def test_the_trainer_is_built_from_the_config() -> None:
    cfg = TrainConfig(epochs=6, stop_after=4, precision="bf16", accumulate=2, batch_size=32)
    trainer = search_lightning.trainer(Run(cfg, torch.device("cpu")), monitor="val_acc")
    assert trainer.max_epochs == 4 and trainer.accumulate_grad_batches == 2
    assert trainer.precision == "bf16-mixed"


def test_a_monitor_that_was_never_logged_is_named() -> None:
    run = Run(TrainConfig(epochs=1), torch.device("cpu"))
    module = Watched(run.config)
    trainer = search_lightning.trainer(run, monitor="val_f1")
    module.report = trainer.callbacks[0]
    with pytest.raises(KeyError, match="val_f1.*val_acc"):
        trainer.fit(module, _loader(), _loader())


def test_the_lightning_example_runs_as_its_readme_says(tmp_path: Path) -> None:
    recipe = yaml.safe_load((ROOT / "examples/lightning.yaml").read_text())
    recipe.update(storage=f"sqlite:///{tmp_path / 'l.db'}",
                  space=str(ROOT / "examples/lightning-space.yaml"))
    path = tmp_path / "lightning.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = CliRunner().invoke(cli, ["run", str(path), "--trials", "5", "--quiet"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "Pareto front of 'lightning-digits'" in out.output
