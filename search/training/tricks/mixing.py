"""Batch mixing: mixup and cutmix from torchvision.transforms.v2.

Both blend pairs of examples within a batch and return soft targets (the label mix in
the same proportion), which ``CrossEntropyLoss`` accepts. With both enabled, each batch
uses one of them at random (as timm does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from search.training.trick import Context, Field, Trick, number

Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def build(num_classes: int, *, mixup_alpha: float, cutmix_alpha: float) -> Mixer:
    """A function (images, labels) -> (mixed images, targets); the identity when both are off."""
    from torchvision.transforms import v2

    choices = []
    if mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not choices:
        return _identity
    transform = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)
    return lambda x, y: transform(x, y)


def _identity(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, y


def _batch(cfg: Any, num_classes: int) -> Mixer | None:
    if not cfg.mixup_alpha and not cfg.cutmix_alpha:
        return None
    return build(num_classes, mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha)


def _check(cfg: Any, ctx: Context) -> None:
    for name in ("mixup_alpha", "cutmix_alpha"):
        if getattr(cfg, name) and not ctx.images:
            raise ValueError(f"{name}: torchvision's MixUp and CutMix blend image batches "
                             f"(N, C, H, W); the inputs are not images, got {getattr(cfg, name)}")


TRICK = Trick(
    "mixing", "Mixup and cutmix: blend pairs of examples and their labels.",
    (Field("mixup_alpha", "float", 0.0, number(0.0),
           "torchvision `MixUp` strength (0 = off)", sample="float", off=0.0, key=True),
     Field("cutmix_alpha", "float", 0.0, number(0.0),
           "torchvision `CutMix` strength (0 = off; with mixup: one of them per batch)",
           sample="float", off=0.0, key=True)),
    order=55, batch=_batch, check=_check)
