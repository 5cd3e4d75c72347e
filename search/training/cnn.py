"""The built-in CNN: small images (8x8 digits up to 32x32 CIFAR), any depth and width."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Convolution blocks, then a linear head on globally pooled features.

    Blocks (the unit of ``frozen_layers`` and ``depth``): ``stem``, then ``layer1``,
    ``layer2``, ... each doubling the channels (``width`` first) and halving the image.
    The default depth 3 is ``stem, layer1, layer2``; blocks past the third round their
    halving up, so small images never shrink to nothing.
    """

    blocks = (("stem",), ("layer1",), ("layer2",))  # at the default depth

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32, depth: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()

        def conv(cin: int, cout: int, pool: bool, ceil: bool = False) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2, ceil_mode=ceil))
            return nn.Sequential(*layers)

        self.stem = conv(in_channels, width, pool=False)
        names, channels = ["stem"], width
        for i in range(1, depth):
            self.add_module(f"layer{i}", conv(channels, 2 * channels, pool=True, ceil=i > 2))
            names.append(f"layer{i}")
            channels *= 2
        self.blocks = tuple((n,) for n in names)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for (name,) in self.blocks:
            x = getattr(self, name)(x)
        return self.head(x)
