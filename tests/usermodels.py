"""User models and user data for the tests, loaded by the library as ``tests.usermodels:NAME``.

The models record what the engine did with them (the dtype a forward ran in, the instance
it trained), so a test can prove that a trick reached the training loop.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from search.training.data import Data, DataSpec
from search.training.data import load as load_data
from search.training.models import SmallCNN

# Filled by the models below; tests clear them before a run.
SEEN_DTYPES: list[torch.dtype] = []  # dtype of the first conv's output, one per forward
INSTANCES: list[nn.Module] = []  # every model built through ``recording_cnn``

TARGET = DataSpec("digits", classes=(5, 6, 7, 8, 9))  # the smoke study's target task
PRETRAINED = "pretrained:digits-0-4"


@functools.cache
def target_data() -> Data:
    """Digits 5-9 (the target task), loaded once per test session; ``train`` never mutates it."""
    return load_data(TARGET)


class RecordingCNN(SmallCNN):
    """The built-in CNN (so pretrained checkpoints fit) that records its first conv's dtype."""

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__(in_channels, num_classes, width=width, dropout=dropout)
        self.stem[0].register_forward_hook(
            lambda _module, _inputs, output: SEEN_DTYPES.append(output.dtype))
        INSTANCES.append(self)


def recording_cnn(*, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    return RecordingCNN(in_channels, num_classes, dropout=dropout)


def recording_small_cnn(*, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    """Width 8: low precision is slow on CPUs without bf16/fp16 units."""
    return RecordingCNN(in_channels, num_classes, width=8, dropout=dropout)


def sized_cnn(*, num_classes: int, in_channels: int, depth: int = 3, width: int = 32,
              dropout: float = 0.0) -> nn.Module:
    """A model function that takes depth and width (the architecture trick passes them)."""
    return SmallCNN(in_channels, num_classes, depth=depth, width=width, dropout=dropout)


SEEN: list[dict[str, object]] = []  # one record per training forward of ObservingCNN


class ObservingCNN(SmallCNN):
    """The built-in CNN (pretrained checkpoints fit) recording what each training forward saw."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            weight = self.layer1[0].weight  # 1-channel inputs look alike in either format
            SEEN.append({"channels_last": weight.is_contiguous(memory_format=torch.channels_last)
                         and not weight.is_contiguous(),
                         "tf32": torch.backends.cuda.matmul.allow_tf32,
                         "cudnn_benchmark": torch.backends.cudnn.benchmark,
                         "batch": len(x)})
        return super().forward(x)


def observing_cnn(*, num_classes: int, in_channels: int, **kwargs: object) -> nn.Module:
    return ObservingCNN(in_channels, num_classes, **kwargs)


class OOMAfter(SmallCNN):
    """Raises CUDA's out-of-memory error on its ``n``-th forward (counting from 1)."""

    def __init__(self, in_channels: int, num_classes: int, n: int) -> None:
        super().__init__(in_channels, num_classes, width=8)
        self.n = n
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        if self.forwards == self.n:
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total)")
        return super().forward(x)


def oom_on_third_forward(*, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    return OOMAfter(in_channels, num_classes, 3)


def oom_on_first_forward(*, num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    return OOMAfter(in_channels, num_classes, 1)


def not_a_module(*, num_classes: int, in_channels: int, dropout: float) -> object:
    return "a string, not a model"


# -- user data --------------------------------------------------------------------------


def indexed_images() -> tuple[torch.Tensor, torch.Tensor]:
    """60 one-channel 4x4 images whose every pixel is the example's index; labels i % 3.

    Normalization is an increasing affine map, so a test can recover which examples
    went to which split from the pixel values.
    """
    n = 60
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return x, torch.arange(n) % 3


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[torch.Tensor, int]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.items[i]


def digits_dataset() -> torch.utils.data.Dataset:
    """A map-style Dataset of (image, label): 100 real digits of classes 0 and 1."""
    from sklearn.datasets import load_digits

    d = load_digits(n_class=2)
    images = torch.tensor(d.images[:100], dtype=torch.float32).unsqueeze(1) / 16.0
    return _ListDataset([(images[i], int(d.target[i])) for i in range(100)])


def scalars() -> tuple[torch.Tensor, torch.Tensor]:
    """Wrongly shaped user data: one number per example, not a row."""
    return torch.zeros(20), torch.zeros(20, dtype=torch.int64)


@functools.cache
def small_data() -> Data:
    """``target_data`` cut to its first 160 training examples: 5 steps of 32, short on a CPU."""
    full = target_data()
    x, y = full.tensors["train"]
    return dataclasses.replace(full, tensors={**full.tensors, "train": (x[:160], y[:160])})


def cancer_features() -> tuple[torch.Tensor, torch.Tensor]:
    """Feature rows (N, 30): scikit-learn's breast-cancer data, standardized."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def token_ids() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, 13) from a vocabulary of 50; the label: are most tokens below 25?"""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50, (400, 13), generator=g)
    return x, ((x < 25).sum(1) > 6).long()


def mlp(*, num_classes: int, in_channels: int, dropout: float = 0.0) -> nn.Module:
    """For feature rows: ``in_channels`` is the feature count."""
    return nn.Sequential(nn.Linear(in_channels, 32), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(32, num_classes))


def bag_of_tokens(*, num_classes: int, in_channels: int, dropout: float = 0.0) -> nn.Module:
    """For token ids: an embedding bag over a vocabulary of 50."""
    return nn.Sequential(nn.EmbeddingBag(50, 16), nn.ReLU(), nn.Linear(16, num_classes))
