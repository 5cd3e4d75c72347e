"""Data augmentation for images: random crop after zero padding, and horizontal flip.

Applied to each training batch where it lies (on the device for tensor data sets), each
image with its own random crop offset and flip: the per-image semantics of torchvision's
``v2.RandomCrop(size, padding=p)`` and ``v2.RandomHorizontalFlip()`` in a DataLoader
(applied to a whole batch, those draw one crop and one flip for all of its images). A
horizontal flip changes what some images mean (digits, text), so it is refused unless
the recipe's data says its labels survive it (``data.flip_invariant: true``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

from search.training.trick import Context, Field, Trick, boolean, number


def crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) randomly cropped back to H x W after zero-padding
    ``padding`` pixels on every side."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
    left = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
    rows = (top + torch.arange(h, device=x.device).view(1, h, 1)).expand(n, h, w)
    cols = (left + torch.arange(w, device=x.device).view(1, 1, w)).expand(n, h, w)
    flat = rows * padded.shape[-1] + cols  # index into each padded image, per image
    out = padded.flatten(2).gather(2, flat.flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1))
    return out.view_as(x)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` flipped left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def _batch(cfg: Any, num_classes: int) -> Callable[..., Any] | None:
    if not cfg.crop_padding and not cfg.hflip:
        return None

    def augment(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if cfg.crop_padding:
            x = crop(x, cfg.crop_padding)
        if cfg.hflip:
            x = hflip(x)
        return x, y
    return augment


def _check(cfg: Any, ctx: Context) -> None:
    for name in ("crop_padding", "hflip"):
        if getattr(cfg, name) and not ctx.images:
            raise ValueError(f"{name}: augments images; the inputs are not images, "
                             f"got {getattr(cfg, name)}")
    if cfg.hflip and not ctx.flip_invariant:
        raise ValueError("hflip: a flip may change what an image means; set "
                         "data.flip_invariant: true in the recipe if its labels survive a "
                         "horizontal flip, got true")


TRICK = Trick(
    "augmentation", "Random crop after padding and horizontal flip, per image.",
    (Field("crop_padding", "int", 0, number(0, integer=True),
           "random crop after zero-padding this many pixels per side (0 = off)",
           sample="int", off=0, key=True),
     Field("hflip", "bool", False, boolean,
           "random horizontal flip (where the recipe's `data.flip_invariant` allows it)", off=False,
           key=True)),
    order=50, batch=_batch, check=_check)
