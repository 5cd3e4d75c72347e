"""Gradient clipping: rescale the gradients so their global norm is at most ``clip_norm``,
between the backward passes and the optimizer step (after unscaling fp16's loss scale)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from search.training.trick import Field, Trick, number, optional


def _before_step(cfg: Any, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler) -> Callable[[], None] | None:
    if cfg.clip_norm is None:
        return None
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def clip() -> None:
        scaler.unscale_(optimizer)  # the true gradients, not fp16's scaled ones
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
    return clip


TRICK = Trick(
    "clipping", "Clip the gradients' global norm before each optimizer step.",
    (Field("clip_norm", "float | None", None, optional(number(0.0, low_open=True)),
           "clip the gradients' global norm to this before each step (`null`: off)",
           sample="float", key=True),),
    order=36, before_step=_before_step)
