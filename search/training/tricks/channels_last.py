"""Channels-last memory format (NHWC) for the model and its input batches."""

from __future__ import annotations

from typing import Any

import torch

from search.training.trick import Context, switch


def _prepare(cfg: Any, model: torch.nn.Module, blocks: Any) -> None:
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)


def _inputs(cfg: Any, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _check(cfg: Any, ctx: Context) -> None:
    if cfg.channels_last and not ctx.images:
        raise ValueError("channels_last: a memory format of image batches (N, C, H, W); "
                         "the inputs are not images, got true")


TRICK = switch("channels_last", "Train in the channels-last memory format.",
               "channels-last (NHWC) memory format for the model and every input batch",
               order=75, prepare=_prepare, inputs=_inputs, check=_check)
