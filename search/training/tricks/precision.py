"""Numeric precision: one autocast context and one grad scaler, built once per run.

- ``fp32``: no autocast.
- ``bf16``: ``torch.autocast`` to bfloat16 (same exponent range as fp32: no loss scaling).
- ``fp16``: ``torch.autocast`` to float16 plus a ``GradScaler`` (fp32 master weights,
  loss scaling so small gradients do not flush to zero). On CPU, PyTorch's autocast and
  GradScaler support float16 too, so fp16 runs there, correctly though usually slower
  than fp32 (CPUs rarely have fast fp16 math): the search measures that honestly
  rather than refusing it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from search.training.trick import Field, Trick, choice

PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(precision: str, device: str | torch.device) -> Any:
    """The forward-pass context for ``precision`` on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16; a disabled (pass-through) scaler otherwise."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def _probes(cfg: Any, choices: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """One lower precision: bf16 where the space has it, else fp16."""
    if cfg.precision != "fp32":
        return []
    return [{"precision": p} for p in ("bf16", "fp16") if p in choices.get("precision", ())][:1]


TRICK = Trick(
    "precision", "Numeric precision of the forward pass (autocast) and loss scaling.",
    (Field("precision", "str", "fp32", choice(PRECISIONS),
           "`fp32`, `fp16` (autocast + GradScaler), `bf16` (autocast)", off="fp32", key=True),),
    order=70, autocast=lambda cfg, device: autocast(cfg.precision, device),
    grad_scaler=lambda cfg, device: grad_scaler(cfg.precision, device), probes=_probes)
