"""Trainers for the tests (recipe ``train: tests.usertrainers:NAME``): small, real loops
on the run API (``search/training/run.py``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _data(device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(192, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return tuple(t.to(device) for t in (x[:128], y[:128], x[128:], y[128:]))


def linear(run: Any) -> dict[str, float]:
    """A small MLP on a linearly separable task; reports validation accuracy per epoch."""
    cfg, device = run.config, run.device
    x, y, xv, yv = _data(device)
    model = nn.Sequential(nn.Linear(6, run.params.get("width_units", 8)), nn.ReLU(),
                          nn.Linear(run.params.get("width_units", 8), 2)).to(device)
    optimizer = cfg.build_optimizer(model)
    scheduler = cfg.build_scheduler(optimizer, -(-len(y) // cfg.batch_size))
    criterion = cfg.build_criterion()
    for epoch in range(1, cfg.train_epochs + 1):
        model.train()
        with run.timed():
            for start in range(0, len(y), cfg.batch_size):
                loss = criterion(model(x[start:start + cfg.batch_size]),
                                 y[start:start + cfg.batch_size])
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
        with torch.no_grad():
            accuracy = (model.eval()(xv).argmax(1) == yv).float().mean().item()
        run.report(accuracy, epoch)
    return {"test": accuracy}


def silent(run: Any) -> None:
    """Trains without ever reporting."""
    with run.timed():
        pass


def fails_on_wide(run: Any) -> dict[str, float]:
    """Raises for one value of its param: the study must record an error and go on."""
    if run.params.get("width_units") == 32:
        raise ValueError("no wide models here")
    return linear(run)


def nan_after_one(run: Any) -> None:
    run.report(0.5, 1)
    run.report(float("nan"), 2)


def cross_entropy(run: Any) -> None:
    """``linear``'s loop, reporting validation loss: a metric to minimize."""
    cfg, device = run.config, run.device
    x, y, xv, yv = _data(device)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).to(device)
    optimizer = cfg.build_optimizer(model)
    criterion = cfg.build_criterion()
    for epoch in range(1, cfg.train_epochs + 1):
        model.train()
        with run.timed():
            for start in range(0, len(y), cfg.batch_size):
                criterion(model(x[start:start + cfg.batch_size]),
                          y[start:start + cfg.batch_size]).backward()
                optimizer.step()
                optimizer.zero_grad()
        with torch.no_grad():
            loss = nn.functional.cross_entropy(model.eval()(xv), yv).item()
        run.report(loss, epoch)


def half_epochs(run: Any) -> None:
    """Reports twice per epoch (every N steps): steps are fractions of an epoch."""
    for half in range(1, 2 * run.config.train_epochs + 1):
        with run.timed():
            sum(range(2000))
        run.report(min(0.5 + 0.05 * half, 0.9), half / 2)
