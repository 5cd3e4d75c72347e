"""A LightningModule, searched as it is: scikit-learn's 8x8 digits with a small MLP.

`examples/lightning.yaml` names `train: examples.lightning_digits:train`. The module is
ordinary Lightning; the only search-specific lines are in `train(run)`: the module takes
its optimizer and loss from the sampled config, and `search.training.lightning.trainer`
builds the Trainer (precision, accumulation, epochs from the config) with the callback
that times the training epochs and reports `val_acc` to the study's pruner.
"""

from __future__ import annotations

from typing import Any

import lightning as L  # noqa: N812 - Lightning's own convention
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from search.training import lightning as search_lightning


class DigitsMLP(L.LightningModule):
    def __init__(self, config: Any, hidden: int, steps_per_epoch: int) -> None:
        super().__init__()
        self.config, self.steps_per_epoch = config, steps_per_epoch
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                 nn.Dropout(config.dropout), nn.Linear(hidden, 10))
        self.loss = config.build_criterion()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = self.config.build_optimizer(self)
        scheduler = self.config.build_scheduler(optimizer, self.steps_per_epoch)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def loaders(batch_size: int) -> tuple[DataLoader, DataLoader]:
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    return (DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(0)),
            DataLoader(TensorDataset(x[val], y[val]), batch_size=512))


def train(run: Any) -> None:
    train_loader, val_loader = loaders(run.config.batch_size)
    model = DigitsMLP(run.config, run.params.get("hidden", 64), len(train_loader))
    search_lightning.trainer(run, monitor="val_acc").fit(model, train_loader, val_loader)
