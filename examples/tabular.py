"""Your own training loop, searched: a tabular classifier scored by F1.

`examples/tabular.yaml` names `train: examples.tabular:train`; `search run
examples/tabular.yaml` then calls `train(run)` once per trial. The loop is plain
PyTorch on scikit-learn's breast-cancer data (569 tumours, 30 features): the study gives
it the sampled config (`run.config`: optimizer, schedule, loss, precision, ...), its own
params (`run.params["hidden_size"]`, a dimension of `examples/tabular-space.yaml`) and
the device; the loop marks what it pays for with `run.timed()` and reports validation F1
after each epoch with `run.report` (with the test split's F1 beside it, kept for the
best epoch), where the study's pruner may stop it: a `Stop` exception, let through.
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from torch import nn


def splits(device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fixed, stratified train / validation / test splits (60/20/20), standardized on the
    training split's statistics."""
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y,
                                                        random_state=0)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    stratify=y_rest, random_state=0)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    return {name: (torch.tensor((xs - mean) / std, dtype=torch.float32, device=device),
                   torch.tensor(ys, device=device))
            for name, xs, ys in (("train", x_train, y_train), ("val", x_val, y_val),
                                 ("test", x_test, y_test))}


@torch.no_grad()
def f1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float(f1_score(y.cpu(), model(x).argmax(1).cpu()))


def train(run: Any) -> None:
    cfg, device = run.config, run.device
    data = splits(device)
    x_train, y_train = data["train"]
    hidden = run.params.get("hidden_size", 32)
    model = nn.Sequential(nn.Linear(x_train.shape[1], hidden), nn.ReLU(),
                          nn.Dropout(cfg.dropout), nn.Linear(hidden, 2)).to(device)
    cfg.prepare(model, blocks=[])  # nothing to freeze in a model trained from scratch
    steps = -(-len(y_train) // cfg.batch_size)  # the last batch may be partial
    optimizer = cfg.build_optimizer(model)
    scheduler = cfg.build_scheduler(optimizer, steps)
    criterion = cfg.build_criterion()  # cross-entropy with the config's label smoothing
    scaler = cfg.grad_scaler(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(1, cfg.train_epochs + 1):
        model.train()
        with run.timed():  # what a user pays for: the training steps
            order = torch.randperm(len(y_train), generator=generator).to(device)
            for start in range(0, len(y_train), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                with cfg.autocast(device):
                    loss = criterion(model(x_train[idx]), y_train[idx])
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
        # Outside the timed region: validation F1 (what the search selects on) and test F1
        # (kept for the best epoch's point; never used to select).
        run.report(f1(model, *data["val"]), epoch, test=f1(model, *data["test"]))
