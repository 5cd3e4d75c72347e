"""A plain PyTorch training loop that uses a config exported by `search export`.

    search export digits --knee -o best.yaml
    python examples/train_with_best.py best.yaml

Everything the search measured comes from the config's building blocks: the optimizer
(frozen parameters excluded), the per-batch lr schedule, the loss with label smoothing,
mixup/cutmix, the precision context and grad scaler, and freezing of pretrained blocks.
The model and data here are the default study's (digits 5-9, the built-in CNN pretrained
on digits 0-4); put your own in their place.
"""

from __future__ import annotations

import sys

import torch

import search
from search.data import DataSpec
from search.data import load as load_data
from search.models import ModelSpec
from search.models import build as build_model


def main(path: str) -> float:
    cfg = search.load_config(path)
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    data = load_data(DataSpec("digits", classes=(5, 6, 7, 8, 9)))
    model = build_model(ModelSpec("cnn", weights="pretrained:digits-0-4"),
                        in_channels=1, num_classes=data.num_classes, dropout=cfg.dropout)
    cfg.freeze(model)  # first cfg.frozen_layers blocks: no grad, no optimizer, frozen BN
    model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    x_train, y_train = data.train_x.to(device), data.train_y.to(device)
    steps_per_epoch = len(y_train) // cfg.batch_size
    optimizer = cfg.build_optimizer(model)
    scheduler = cfg.build_scheduler(optimizer, steps_per_epoch)
    criterion = cfg.build_criterion()
    mix = cfg.build_mixer(data.num_classes)
    scaler = cfg.grad_scaler(device)

    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(y_train), device=device)
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x, y = mix(x_train[idx], y_train[idx])
            with cfg.autocast(device):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()

        model.eval()
        with torch.no_grad(), cfg.autocast(device):
            logits = model(data.val_x.to(device))
        accuracy = (logits.argmax(1).cpu() == data.val_y).float().mean().item()
        print(f"epoch {epoch + 1}/{cfg.epochs}: validation accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/train_with_best.py EXPORTED.yaml")
    main(sys.argv[1])
