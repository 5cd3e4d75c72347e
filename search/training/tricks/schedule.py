"""Learning-rate schedules, stepped once per batch.

- ``constant``: linear warm-up from 0 over the first ``warmup`` fraction, then flat.
- ``cosine``: the same warm-up, then cosine decay to 0 at the last step.
- ``onecycle``: the one-cycle policy (Smith's super-convergence) via torch's OneCycleLR:
  rises from lr/25 to lr over the ``warmup`` fraction (0 means torch's default 0.3),
  then anneals (cosine) to lr/25/1e4. Momentum is not cycled, so the optimizer stays the
  configured one (plain SGD keeps no momentum).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from search.training.trick import Field, Trick, choice, number
from search.training.tricks.optimizer import effective_lr

SCHEDULES = ("constant", "cosine", "onecycle")


def factor(name: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base lr at ``step`` (0-based) for the constant and cosine schedules."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build(name: str, optimizer: torch.optim.Optimizer, lr: float, *, total_steps: int,
          warmup: float) -> LRScheduler:
    """The scheduler for ``total_steps`` optimizer steps."""
    if name == "onecycle":
        total = max(2, total_steps)
        return OneCycleLR(optimizer, max_lr=lr, total_steps=total,
                          pct_start=_one_cycle_start(warmup or 0.3, total),
                          cycle_momentum=False)
    warmup_steps = round(warmup * total_steps)
    return LambdaLR(optimizer, lambda step: factor(name, step, total_steps, warmup_steps))


def _one_cycle_start(fraction: float, total_steps: int) -> float:
    """OneCycleLR's ``pct_start`` for a warm-up ``fraction`` of ``total_steps``.

    OneCycleLR divides by the rise's length, ``pct_start * total_steps - 1`` steps, so a
    rise of exactly one step (warm-up 0.25 of 4 steps, 0.1 of 10) raises
    ZeroDivisionError; such a rise is lengthened to two steps (with 2 steps in all, where
    two would leave no descent, to torch's default 0.3).
    """
    if fraction * total_steps - 1 != 0:  # the very expression OneCycleLR divides by
        return fraction
    return 2 / total_steps if total_steps > 2 else 0.3


def _build(cfg: Any, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
    return build(cfg.lr_schedule, optimizer, effective_lr(cfg), total_steps=total_steps,
                 warmup=cfg.warmup)


TRICK = Trick(
    "schedule", "The learning-rate schedule and its warm-up, stepped once per batch.",
    (Field("lr_schedule", "str", "constant", choice(SCHEDULES),
           "`constant`, `cosine`, `onecycle`, laid out over `epochs`", key=True),
     Field("warmup", "float", 0.0, number(0.0, 1.0, high_open=True),
           "warm-up, as a fraction of all steps", sample="float", off=0.0)),
    order=20, scheduler=_build)
