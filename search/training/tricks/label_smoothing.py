"""Label smoothing: the loss, cross-entropy against smoothed targets."""

from __future__ import annotations

from typing import Any

import torch

from search.training.trick import Field, Trick, number


def _criterion(cfg: Any) -> torch.nn.Module:
    """Cross-entropy with the configured label smoothing (accepts soft targets)."""
    return torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


TRICK = Trick(
    "label_smoothing", "Cross-entropy against targets smoothed toward uniform.",
    (Field("label_smoothing", "float", 0.0, number(0.0, 1.0, high_open=True),
           "via `CrossEntropyLoss(label_smoothing=)`", sample="float", off=0.0, key=True),),
    order=60, criterion=_criterion)
