"""Freezing the first k blocks of a pretrained backbone (transfer learning).

Freezing block i means, for every module in it:
- its parameters get ``requires_grad=False``; the optimizer is built from trainable
  parameters only, so weight decay and momentum cannot move them either;
- its BatchNorm layers become ``torchvision.ops.FrozenBatchNorm2d``: they normalize with
  the pretrained running statistics, which ``model.train()`` no longer updates.

Because the input needs no gradient and nothing in the frozen prefix does, autograd
records no graph there: backward stops at the first trainable block. That is the speed-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

Blocks = Sequence[Sequence[str]]  # ordered blocks; each block is a group of module names


def as_groups(blocks: Iterable[str | Iterable[str]]) -> list[list[str]]:
    """Accept ``["layer1", ["conv1", "bn1"], ...]``: a name or a group of names per block."""
    return [[b] if isinstance(b, str) else list(b) for b in blocks]


def freeze(model: nn.Module, blocks: Blocks, k: int) -> list[str]:
    """Freeze the first ``k`` of ``blocks`` in place; returns the frozen module names."""
    if k > len(blocks):
        raise ValueError(f"frozen_layers: the model has {len(blocks)} blocks, got {k}")
    names = [name for block in blocks[:k] for name in block]
    for name in names:
        module = model.get_submodule(name)
        for p in module.parameters():
            p.requires_grad_(False)
        _freeze_batchnorm(model, name, module)
    return names


def _freeze_batchnorm(model: nn.Module, name: str, module: nn.Module) -> None:
    from torchvision.ops import FrozenBatchNorm2d

    targets = [(name, module)] if isinstance(module, nn.BatchNorm2d) else [
        (f"{name}.{child}", m) for child, m in module.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    for full, bn in targets:
        frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
        with torch.no_grad():
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
        frozen.to(bn.weight.device)
        parent, _, attr = full.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, frozen)
