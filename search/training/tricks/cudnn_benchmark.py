"""cuDNN autotuning: each new convolution shape tries cuDNN's algorithms once and keeps the
fastest (a cost paid in the first steps, counted in the run's seconds). GPUs only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from search.training.trick import switch


@contextlib.contextmanager
def _switches(cfg: Any, device: Any) -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


TRICK = switch("cudnn_benchmark", "Let cuDNN autotune its convolution algorithms.",
               "`torch.backends.cudnn.benchmark` (GPUs; no effect on the CPU)",
               order=86, switches=_switches)
