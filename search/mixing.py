"""Batch mixing: mixup and cutmix from torchvision.transforms.v2.

Both blend pairs of examples within a batch and return soft targets (the label mix in
the same proportion), which ``CrossEntropyLoss`` accepts. With both enabled, each batch
uses one of them at random (as timm does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

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
