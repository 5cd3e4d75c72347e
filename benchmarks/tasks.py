"""Tasks the benchmarks make themselves (nothing can be downloaded here).

``cifar_sized``: a CIFAR-10-shaped task (3x32x32 colour images, 10 classes, 60,000
examples) made from scikit-learn's bundled digits. Each image is one real 8x8 digit,
scaled 3x to 24x24 and drawn at a random offset in a random colour on a random background
colour, with pixel noise. It costs what CIFAR-10 costs per step (same shape), and it is
learnable, so "as accurate as the baseline" means something. Use it as a data set of a
recipe or of ``search train``: ``data: {name: "benchmarks.tasks:cifar_sized"}`` (run
from the repository root, so that ``benchmarks`` is importable).

``cifar_sized_small``: the same with 2,000 examples, to check the GPU scripts on a CPU.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits


def make(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images (N, 3, 32, 32) in [0, 1] and their labels 0-9."""
    digits = load_digits()
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(digits.target), (size,), generator=g)
    glyph = torch.as_tensor(digits.images, dtype=torch.float32)[pick] / 16.0  # (N, 8, 8)
    glyph = glyph.repeat_interleave(3, 1).repeat_interleave(3, 2)  # (N, 24, 24)
    ink = torch.rand(size, 3, 1, 1, generator=g)
    paper = torch.rand(size, 3, 1, 1, generator=g)
    x = paper.expand(size, 3, 32, 32).clone()
    dx = torch.randint(0, 9, (size,), generator=g)
    dy = torch.randint(0, 9, (size,), generator=g)
    for i in range(size):  # a loop of slices: about a second for 60,000
        a = glyph[i]
        patch = x[i, :, dy[i]:dy[i] + 24, dx[i]:dx[i] + 24]
        patch.mul_(1 - a).add_(ink[i] * a)
    x.add_(0.1 * torch.randn(x.shape, generator=g)).clamp_(0, 1)
    return x, torch.as_tensor(digits.target)[pick].long()


def cifar_sized() -> tuple[torch.Tensor, torch.Tensor]:
    return make(60_000)


def cifar_sized_small() -> tuple[torch.Tensor, torch.Tensor]:
    return make(2_000)
