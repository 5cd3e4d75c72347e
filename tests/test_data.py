"""Data sets: the fixed stratified split, class filters, and every kind of source."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from search.config import TrainConfig
from search.data import DataSpec, load
from search.engine import train
from search.errors import UserError
from search.models import ModelSpec


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


# -- digits and the split ---------------------------------------------------------------


def test_digits_split_is_stratified_and_disjoint() -> None:
    data = load(DataSpec("digits"))
    target = load_digits().target
    assert data.train_size + data.val_size == len(target) == 1797
    assert data.val_size == pytest.approx(0.2 * 1797, abs=1)
    assert data.num_classes == 10 and data.channels == 1
    assert data.train_x.shape[1:] == (1, 8, 8)
    val = Counter(data.val_y.tolist())
    for c, total in Counter(target.tolist()).items():
        assert abs(val[c] - 0.2 * total) <= 1, c
    # The digits images are all distinct, so disjoint rows mean disjoint examples.
    train_rows, val_rows = _rows(data.train_x), _rows(data.val_x)
    assert len(train_rows) == data.train_size and len(val_rows) == data.val_size
    assert not train_rows & val_rows


def test_split_is_fixed_across_calls_and_set_by_split_seed() -> None:
    a, b = load(DataSpec("digits")), load(DataSpec("digits"))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    c = load(DataSpec("digits", split_seed=1))
    assert _rows(c.val_x) != _rows(a.val_x)


def test_split_normalizes_with_training_statistics() -> None:
    data = load(DataSpec("digits", val_fraction=0.5))
    assert data.train_size == pytest.approx(1797 / 2, abs=1)
    assert data.train_x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert data.train_x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert data.val_x.mean().item() != pytest.approx(0.0, abs=1e-5)


def test_classes_filter_relabels_to_0_to_k_minus_1() -> None:
    data = load(DataSpec("digits", classes=(9, 3, 7)))
    assert data.num_classes == 3
    labels = torch.cat([data.train_y, data.val_y]).tolist()
    assert set(labels) == {0, 1, 2}
    source = Counter(load_digits().target.tolist())
    counts = Counter(labels)
    assert [counts[0], counts[1], counts[2]] == [source[3], source[7], source[9]]  # sorted


def test_classes_without_examples_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^data\.classes: .*got \[42\]$"):
        load(DataSpec("digits", classes=(42,)))


def test_unknown_data_name_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"^data\.name: unknown data set .*got 'imagenet'$"):
        load(DataSpec("imagenet"))


def test_batches_drop_the_last_partial_batch_and_follow_the_generator() -> None:
    data = load(DataSpec("digits", classes=(0, 1)))
    batches = list(data.train_batches(64, torch.Generator().manual_seed(0)))
    assert len(batches) == data.steps_per_epoch(64) == data.train_size // 64
    assert all(x.shape == (64, 1, 8, 8) and y.shape == (64,) for x, y in batches)
    again = list(data.train_batches(64, torch.Generator().manual_seed(0)))
    other = list(data.train_batches(64, torch.Generator().manual_seed(1)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(batches, other, strict=True))
    x, _ = next(data.train_batches(64, torch.Generator(), channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert sum(len(y) for _, y in data.val_batches(batch_size=50)) == data.val_size


def test_to_repeats_grey_images_for_rgb_models() -> None:
    data = load(DataSpec("digits", classes=(0, 1)))
    rgb = data.to(torch.device("cpu"), 3)
    assert rgb.channels == 3 and rgb.train_x.shape[1] == 3
    assert torch.equal(rgb.train_x[:, 2], data.train_x[:, 0])


# -- fake, image folders, torchvision sets ----------------------------------------------


def test_fake_data_loads_and_trains() -> None:
    spec = DataSpec("fake", size=200, image_size=12)
    data = load(spec)
    assert data.channels == 3 and data.train_x.shape[1:] == (3, 12, 12)
    assert data.train_size + data.val_size == 200 and 2 <= data.num_classes <= 10
    assert torch.equal(load(spec).train_x, data.train_x)
    result = train(TrainConfig(epochs=1, batch_size=32), spec, ModelSpec("cnn", width=8),
                   device="cpu")
    assert result.outcome == "completed" and len(result.curve) == 1


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, (low, high) in {"dark": (0, 60), "light": (190, 255)}.items():
        (root / label).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(low, high, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / label / f"{i}.png")
    return root


def test_imagefolder_loads_resizes_and_trains(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images")
    spec = DataSpec(f"imagefolder:{root}", image_size=16)
    data = load(spec)
    assert data.folder is not None
    assert (data.num_classes, data.channels) == (2, 3)
    assert (data.train_size, data.val_size) == (16, 4)
    val_labels = [int(v) for _, y in data.val_batches() for v in y]
    assert sorted(val_labels) == [0, 0, 1, 1]  # stratified
    batches = list(data.train_batches(4, torch.Generator().manual_seed(0)))
    assert len(batches) == 4
    x, y = batches[0]
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    result = train(TrainConfig(epochs=2, batch_size=4, lr=1e-2), data, ModelSpec("cnn", width=8),
                   device="cpu")
    assert result.outcome == "completed" and len(result.curve) == 2
    assert result.accuracy >= 0.5


def test_missing_imagefolder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^data\.name: image folder not found, got '.*nope'$"):
        load(DataSpec(f"imagefolder:{tmp_path / 'nope'}"))


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of the MNIST files: magic (0, 0, uint8, ndim), big-endian sizes, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_dir(root: Path, folder: str) -> Path:
    """Real digits 0-2 (10 each), upscaled 8x8 -> 24x24 and padded to 28x28, in raw IDX files."""
    digits = load_digits(n_class=3)
    keep = np.concatenate([np.flatnonzero(digits.target == c)[:10] for c in range(3)])
    images = np.kron(digits.images[keep], np.ones((3, 3))) * 15  # 0..16 -> 0..240
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    labels = digits.target[keep]
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", len(keep)), ("t10k", 6)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:n])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[:n])
    return root


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_torchvision_set_loads_from_raw_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    root = _mnist_dir(tmp_path / "data", folder)
    data = load(DataSpec(name, data_dir=str(root)))
    assert (data.num_classes, data.channels) == (3, 1)
    assert (data.train_size, data.val_size) == (24, 6)
    assert data.train_x.shape[1:] == (1, 28, 28)
    assert Counter(data.val_y.tolist()) == {0: 2, 1: 2, 2: 2}
    background = data.train_x.min()
    assert (data.train_x[:, :, :2, :] == background).all()  # the padding, rows and columns
    assert (data.train_x[:, :, :, -2:] == background).all()
    assert len(_rows(data.train_x)) > 20  # real, mostly distinct images


def test_missing_data_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^data\.data_dir: mnist not found under '.*nowhere'"):
        load(DataSpec("mnist", data_dir=str(tmp_path / "nowhere")))


# -- user data --------------------------------------------------------------------------


def test_user_data_tensors_split_exactly() -> None:
    data = load(DataSpec("tests.usermodels:indexed_images"))
    assert (data.num_classes, data.channels, data.train_size, data.val_size) == (3, 1, 48, 12)
    # Every pixel of example i is i, normalized by one increasing affine map: rank = index.
    values = torch.cat([data.train_x[:, 0, 0, 0], data.val_x[:, 0, 0, 0]])
    index = values.argsort().argsort()
    train_idx, val_idx = index[:48], index[48:]
    assert set(train_idx.tolist()) | set(val_idx.tolist()) == set(range(60))
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert torch.equal(data.train_y, train_idx % 3) and torch.equal(data.val_y, val_idx % 3)
    assert Counter(data.val_y.tolist()) == {0: 4, 1: 4, 2: 4}


def test_user_data_as_a_dataset() -> None:
    data = load(DataSpec("tests.usermodels:digits_dataset"))
    assert (data.num_classes, data.channels) == (2, 1)
    assert (data.train_size, data.val_size) == (80, 20)
    assert data.train_x.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize(("name", "message"), [
    ("tests.no_such_module:data", r"cannot import module 'tests\.no_such_module'"),
    ("tests.usermodels:no_such_function", r"has no function 'no_such_function'"),
    ("tests.usermodels:flat_vectors", r"must give images shaped \(N, C, H, W\), got \(20, 64\)"),
])
def test_bad_user_data_is_a_user_error(name: str, message: str) -> None:
    with pytest.raises(UserError, match=rf"^data\.name: .*{message}"):
        load(DataSpec(name))


@pytest.mark.parametrize("fraction", [0, 1.5, 0.001])
def test_unusable_val_fraction_is_a_user_error(fraction: float) -> None:
    # 0 and 1.5 are out of range; 0.001 of 1797 leaves fewer validation examples than classes.
    with pytest.raises(UserError, match=rf"^data\.val_fraction: .*{fraction}"):
        load(DataSpec("digits", val_fraction=fraction))
