"""TF32 matmuls and convolutions on NVIDIA GPUs (Ampere and later): float32 tensors,
multiplied with a 10-bit mantissa on tensor cores. No effect on the CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from search.training.trick import switch


@contextlib.contextmanager
def _switches(cfg: Any, device: Any) -> Iterator[None]:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


TRICK = switch("tf32", "TF32 tensor-core math for float32 matmuls and convolutions.",
               "TF32 for float32 matmuls and convolutions (NVIDIA GPUs; no effect on the CPU)",
               order=85, switches=_switches)
