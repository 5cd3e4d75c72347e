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
from typing import Any

import torch
from torch import nn

from search.training.trick import Context, Field, Trick, number

Blocks = Sequence[Sequence[str]]  # ordered blocks; each block is a group of module names


def as_groups(blocks: Iterable[str | Iterable[str]]) -> list[list[str]]:
    """Accept ``["layer1", ["conv1", "bn1"], ...]``: a name or a group of names per block."""
    return [[b] if isinstance(b, str) else list(b) for b in blocks]


def blocks_of(model: nn.Module) -> list[list[str]]:
    """The ordered block list of a model family (what ``frozen_layers`` counts): a
    ``blocks`` attribute (the built-in CNN, a user's model), ResNets' stem and layers,
    each child of ``features`` (MobileNet, EfficientNet, VGG, ConvNeXt, ...)."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model
    own = getattr(model, "blocks", None)
    if own is not None:
        return as_groups(own)
    names = {n for n, _ in model.named_children()}
    if {"conv1", "bn1", "layer1", "layer4"} <= names:  # resnet, resnext, wide_resnet
        return [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    if "features" in names:
        features = model.get_submodule("features")
        return [[f"features.{n}"] for n, _ in features.named_children()]
    return []


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


def _check(cfg: Any, ctx: Context) -> None:
    if cfg.frozen_layers and not ctx.pretrained:
        raise ValueError(f"frozen_layers: freezing needs a pretrained backbone (model.weights), "
                         f"got {cfg.frozen_layers}")
    if ctx.blocks is not None and cfg.frozen_layers > ctx.blocks:
        raise ValueError(f"frozen_layers: the model has {ctx.blocks} blocks, "
                         f"got {cfg.frozen_layers}")


def _probes(cfg: Any, choices: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [{"frozen_layers": 1}] if 1 in choices.get("frozen_layers", ()) \
        and cfg.frozen_layers == 0 else []


TRICK = Trick(
    "freezing", "Freeze the first k blocks of a pretrained backbone.",
    (Field("frozen_layers", "int", 0, number(0, integer=True),
           "freeze the first k blocks of the pretrained backbone (`high: max`: all)",
           sample="int", off=0, key=True, max_blocks=True),),
    order=40, check=_check,
    prepare=lambda cfg, model, blocks: freeze(model, blocks, cfg.frozen_layers),
    probes=_probes)
