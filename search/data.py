"""Data sets, the validation split, and batches.

Names: ``digits`` (scikit-learn's bundled 8x8 digits: real data, offline), torchvision's
``mnist``, ``fashionmnist``, ``cifar10``, ``cifar100`` (from ``data_dir``, downloaded only
when ``download: true``), ``imagefolder:PATH``, ``fake`` (torchvision FakeData, for tests)
and ``module:function`` (a user's own; returns ``(images, labels)`` tensors or a Dataset).

Small data sets live on the device as tensors, so a batch is one index, not a DataLoader
round trip (as the speed-run anchors do). ``imagefolder`` stays on disk and streams
through a DataLoader with workers and pinned memory.

The validation split is fixed, seeded and stratified (``split_seed``, not the trial's
seed), so every trial is scored on the same examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from search.errors import UserError

TORCHVISION_SETS = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "cifar10": "CIFAR10",
                    "cifar100": "CIFAR100"}


@dataclass(frozen=True)
class DataSpec:
    """Which data to train on (the ``data:`` section of a study recipe)."""

    name: str = "digits"
    classes: tuple[int, ...] | None = None  # keep only these labels (relabelled 0..k-1)
    data_dir: str = "data"
    download: bool = False
    val_fraction: float = 0.2
    split_seed: int = 0
    image_size: int = 32  # imagefolder and fake only
    size: int = 512  # fake only: number of examples


@dataclass
class Data:
    """A loaded task: tensors on one device (or a DataLoader-backed image folder)."""

    spec: DataSpec
    num_classes: int
    channels: int
    train_x: torch.Tensor | None = None
    train_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    folder: tuple[torch.utils.data.Dataset, torch.utils.data.Dataset] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def train_size(self) -> int:
        return len(self.folder[0]) if self.folder else len(self.train_y)

    @property
    def val_size(self) -> int:
        return len(self.folder[1]) if self.folder else len(self.val_y)

    def to(self, device: torch.device, channels: int) -> Data:
        """The same task on ``device``, with images repeated to ``channels`` if needed."""
        if self.folder:
            return Data(self.spec, self.num_classes, channels, folder=self.folder, device=device)

        def move(x: torch.Tensor) -> torch.Tensor:
            x = x.to(device)
            return x.expand(-1, channels, -1, -1).contiguous() if x.shape[1] != channels else x

        return Data(self.spec, self.num_classes, channels, move(self.train_x),
                    self.train_y.to(device), move(self.val_x), self.val_y.to(device),
                    device=device)

    def train_batches(self, batch_size: int, generator: torch.Generator,
                      channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled training batches; the last partial batch is dropped."""
        if self.folder:
            yield from _loader_batches(self.folder[0], batch_size, True, generator, self.device,
                                       channels_last)
            return
        n = len(self.train_y)
        order = torch.randperm(n, generator=generator).to(self.device)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            x = self.train_x[idx]
            yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x,
                   self.train_y[idx])

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.train_size // batch_size

    def val_batches(self, batch_size: int = 1024, channels_last: bool = False
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.folder:
            yield from _loader_batches(self.folder[1], batch_size, False, None, self.device,
                                       channels_last)
            return
        for start in range(0, len(self.val_y), batch_size):
            x = self.val_x[start:start + batch_size]
            yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x,
                   self.val_y[start:start + batch_size])


def load(spec: DataSpec) -> Data:
    """Load and split ``spec`` on the CPU (move it with ``Data.to``)."""
    name = spec.name
    if name.startswith("imagefolder:"):
        return _imagefolder(spec, Path(name.removeprefix("imagefolder:")))
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(digits.target, dtype=torch.int64)
    elif name.lower() in TORCHVISION_SETS:
        x, y = _torchvision(spec)
    elif name == "fake":
        from torchvision.datasets import FakeData
        from torchvision.transforms.functional import pil_to_tensor

        fake = FakeData(size=spec.size, image_size=(3, spec.image_size, spec.image_size),
                        num_classes=10, random_offset=spec.split_seed)
        x = torch.stack([pil_to_tensor(img) for img, _ in fake]).float() / 255.0
        y = torch.tensor([int(label) for _, label in fake])
    elif ":" in name:
        x, y = _user(spec)
    else:
        raise UserError(f"data.name: unknown data set (digits, mnist, fashionmnist, cifar10, "
                        f"cifar100, fake, imagefolder:PATH, module:function), got {name!r}")
    return _split(spec, x, y)


def _split(spec: DataSpec, x: torch.Tensor, y: torch.Tensor) -> Data:
    if spec.classes:
        keep = torch.isin(y, torch.tensor(spec.classes))
        if not keep.any():
            raise UserError(f"data.classes: no examples with these labels, "
                            f"got {list(spec.classes)}")
        remap = {c: i for i, c in enumerate(sorted(spec.classes))}
        x, y = x[keep], torch.tensor([remap[int(v)] for v in y[keep]])
    train_idx, val_idx = _stratified_split(y.numpy(), spec)
    # Normalize with the training split's statistics (per channel).
    train_x = x[train_idx]
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Data(spec, num_classes=int(y.max()) + 1, channels=x.shape[1],
                train_x=(train_x - mean) / std, train_y=y[train_idx],
                val_x=(x[val_idx] - mean) / std, val_y=y[val_idx])


def _stratified_split(labels: np.ndarray, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, seeded, stratified train/validation split (indices)."""
    from sklearn.model_selection import train_test_split

    if not 0 < spec.val_fraction < 1:
        raise UserError(f"data.val_fraction: must be in (0, 1), got {spec.val_fraction!r}")
    try:
        return train_test_split(np.arange(len(labels)), test_size=spec.val_fraction,
                                random_state=spec.split_seed, stratify=labels)
    except ValueError as e:  # e.g. fewer validation examples than classes
        raise UserError(f"data.val_fraction: cannot split {len(labels)} examples of "
                        f"{len(set(labels.tolist()))} classes ({e}), "
                        f"got {spec.val_fraction!r}") from None


def _torchvision(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_SETS[spec.name.lower()])
    root = Path(spec.data_dir).expanduser()
    try:
        ds = cls(root=str(root), train=True, download=spec.download)
    except RuntimeError as e:  # "Dataset not found or corrupted. You can use download=True"
        raise UserError(f"data.data_dir: {spec.name} not found under {str(root)!r} "
                        f"(set data.download: true where the network allows): {e}") from None
    images = torch.as_tensor(np.asarray(ds.data))
    x = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return x.float() / 255.0, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def _user(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    from search.models import load_callable

    out = load_callable(spec.name, "data.name")()
    if isinstance(out, tuple) and len(out) == 2:
        x, y = (torch.as_tensor(v) for v in out)
    else:
        xs, ys = zip(*(out[i] for i in range(len(out))), strict=True)
        x, y = torch.stack(list(xs)), torch.as_tensor(ys)
    if x.ndim != 4:
        raise UserError(f"data.name: {spec.name} must give images shaped (N, C, H, W), "
                        f"got {tuple(x.shape)}")
    return x.float(), y.long()


def _imagefolder(spec: DataSpec, root: Path) -> Data:
    from torchvision import datasets, transforms

    if not root.is_dir():
        raise UserError(f"data.name: image folder not found, got {str(root)!r}")
    tf = transforms.Compose([transforms.Resize((spec.image_size, spec.image_size)),
                             transforms.ToTensor()])
    full = datasets.ImageFolder(str(root), transform=tf)
    train_idx, val_idx = _stratified_split(np.asarray(full.targets), spec)
    sub = torch.utils.data.Subset
    return Data(spec, num_classes=len(full.classes), channels=3,
                folder=(sub(full, train_idx.tolist()), sub(full, val_idx.tolist())))


def _loader_batches(ds: torch.utils.data.Dataset, batch_size: int, shuffle: bool,
                    generator: torch.Generator | None, device: torch.device,
                    channels_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle, generator=generator,
        num_workers=min(4, os.cpu_count() or 1), pin_memory=device.type == "cuda",
        persistent_workers=False)
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x,
               y.to(device, non_blocking=True))
