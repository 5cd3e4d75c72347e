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

from search.errors import UserError
from search.training.config import TrainConfig
from search.training.data import DataSpec, load
from search.training.engine import train
from search.training.models import ModelSpec


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


# -- digits and the split ---------------------------------------------------------------


def _xy(data, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return data.tensors[split]


def test_digits_splits_are_stratified_and_disjoint() -> None:
    data = load(DataSpec("digits"))
    target = load_digits().target
    assert data.splits == ("train", "val", "test")
    assert sum(data.size(s) for s in data.splits) == len(target) == 1797
    assert data.size("val") == pytest.approx(0.2 * 1797, abs=1)
    assert data.size("test") == pytest.approx(0.2 * 1797, abs=1)
    assert data.num_classes == 10 and data.channels == 1
    assert _xy(data, "train")[0].shape[1:] == (1, 8, 8)
    for split in ("val", "test"):
        held = Counter(_xy(data, split)[1].tolist())
        for c, total in Counter(target.tolist()).items():
            assert abs(held[c] - 0.2 * total) <= 1, (split, c)
    # The digits images are all distinct, so disjoint rows mean disjoint examples.
    rows = {s: _rows(_xy(data, s)[0]) for s in data.splits}
    assert [len(r) for r in rows.values()] == [data.size(s) for s in data.splits]
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


def test_splits_are_fixed_across_calls_and_set_by_split_seed() -> None:
    a, b = load(DataSpec("digits")), load(DataSpec("digits"))
    for split in a.splits:
        assert torch.equal(_xy(a, split)[0], _xy(b, split)[0])
    c = load(DataSpec("digits", split_seed=1))
    assert _rows(_xy(c, "test")[0]) != _rows(_xy(a, "test")[0])


def test_test_fraction_zero_holds_out_nothing_and_without_drops_a_split() -> None:
    data = load(DataSpec("digits", test_fraction=0.0))
    assert data.splits == ("train", "val") and data.train_size + data.val_size == 1797
    searched = load(DataSpec("digits")).without("test")
    assert searched.splits == ("train", "val")


def test_split_normalizes_with_training_statistics() -> None:
    data = load(DataSpec("digits", val_fraction=0.5, test_fraction=0.1))
    assert data.train_size == pytest.approx(0.4 * 1797, abs=1)
    train_x = _xy(data, "train")[0]
    assert train_x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert train_x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert _xy(data, "val")[0].mean().item() != pytest.approx(0.0, abs=1e-5)


def test_classes_filter_relabels_to_0_to_k_minus_1() -> None:
    data = load(DataSpec("digits", classes=(9, 3, 7)))
    assert data.num_classes == 3
    labels = torch.cat([_xy(data, s)[1] for s in data.splits]).tolist()
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


@pytest.mark.parametrize("fraction", [0.8, -0.1])
def test_test_fraction_out_of_range_is_a_user_error(fraction: float) -> None:
    with pytest.raises(UserError, match=r"^data\.test_fraction: must be in \[0, 1 - val"):
        load(DataSpec("digits", test_fraction=fraction))


def test_batches_cover_every_example_once_and_follow_the_generator() -> None:
    data = load(DataSpec("digits", classes=(0, 1)))
    batches = list(data.train_batches(64, torch.Generator().manual_seed(0)))
    assert data.train_size % 64 != 0  # so the last batch is partial, not dropped
    assert len(batches) == data.steps_per_epoch(64) == -(-data.train_size // 64)
    assert all(x.shape == (64, 1, 8, 8) and y.shape == (64,) for x, y in batches[:-1])
    assert len(batches[-1][1]) == data.train_size % 64
    seen = torch.cat([x for x, _ in batches])
    assert _rows(seen) == _rows(_xy(data, "train")[0])
    again = list(data.train_batches(64, torch.Generator().manual_seed(0)))
    other = list(data.train_batches(64, torch.Generator().manual_seed(1)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(batches, other, strict=True))
    for split in ("val", "test"):
        assert sum(len(y) for _, y in data.eval_batches(split, 50)) == data.size(split)


# -- mnist5k: the default study's data -----------------------------------------------------


def test_mnist5k_is_real_mnist_split_three_ways_and_resized() -> None:
    full = load(DataSpec("mnist5k", test_fraction=0.0, val_fraction=0.5))
    assert full.train_size + full.val_size == 5000 and full.num_classes == 10
    assert _xy(full, "train")[0].shape[1:] == (1, 28, 28)
    data = load(DataSpec("mnist5k", classes=(5, 6, 7, 8, 9), image_size=14))
    assert {s: data.size(s) for s in data.splits} == {"train": 1500, "val": 500, "test": 500}
    assert _xy(data, "test")[0].shape[1:] == (1, 14, 14)
    assert Counter(_xy(data, "test")[1].tolist()) == {c: 100 for c in range(5)}
    assert not _rows(_xy(data, "train")[0]) & _rows(_xy(data, "test")[0])


def test_to_repeats_grey_images_for_rgb_models() -> None:
    data = load(DataSpec("digits", classes=(0, 1)))
    rgb = data.to(torch.device("cpu"), 3)
    assert rgb.channels == 3 and _xy(rgb, "train")[0].shape[1] == 3
    assert torch.equal(_xy(rgb, "test")[0][:, 2], _xy(data, "test")[0][:, 0])


# -- fake, image folders, torchvision sets ----------------------------------------------


def test_fake_data_loads_and_trains() -> None:
    spec = DataSpec("fake", size=200, image_size=12)
    data = load(spec)
    assert data.channels == 3 and _xy(data, "train")[0].shape[1:] == (3, 12, 12)
    assert sum(data.size(s) for s in data.splits) == 200 and 2 <= data.num_classes <= 10
    assert torch.equal(_xy(load(spec), "train")[0], _xy(data, "train")[0])
    result = train(TrainConfig(epochs=1, batch_size=32), spec, ModelSpec("cnn", width=8),
                   device="cpu")
    assert result.outcome == "completed" and len(result.curve) == 1
    assert result.test_accuracy is not None


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, (low, high) in {"dark": (0, 60), "light": (190, 255)}.items():
        (root / label).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(low, high, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / label / f"{i}.png")
    return root


def test_imagefolder_loads_resizes_splits_and_trains(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images")
    spec = DataSpec(f"imagefolder:{root}", image_size=16)
    data = load(spec)
    assert data.folders and data.splits == ("train", "val", "test")
    assert (data.num_classes, data.channels) == (2, 3)
    assert {s: data.size(s) for s in data.splits} == {"train": 12, "val": 4, "test": 4}
    for split in ("val", "test"):
        labels = [int(v) for _, y in data.eval_batches(split) for v in y]
        assert sorted(labels) == [0, 0, 1, 1]  # stratified
    indices = [set(data.folders[s].indices) for s in data.splits]
    assert sum(map(len, indices)) == len(set().union(*indices)) == 20  # disjoint, complete
    batches = list(data.train_batches(5, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [5, 5, 2] and data.steps_per_epoch(5) == 3
    # As for tensors, a lone last example joins the batch before it (12 = 11 + 1).
    assert [len(y) for _, y in data.train_batches(11, torch.Generator())] == [12]
    assert data.steps_per_epoch(11) == 1
    x, y = batches[0]
    assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    result = train(TrainConfig(epochs=2, batch_size=4, lr=1e-2), data, ModelSpec("cnn", width=8),
                   device="cpu")
    assert result.outcome == "completed" and len(result.curve) == 2
    assert result.accuracy >= 0.5 and result.test_accuracy is not None


def test_imagefolder_with_train_and_test_folders_uses_its_own_test_set(tmp_path: Path) -> None:
    _image_folder(tmp_path / "images" / "train")
    _image_folder(tmp_path / "images" / "test")
    data = load(DataSpec(f"imagefolder:{tmp_path / 'images'}", image_size=8))
    assert {s: data.size(s) for s in data.splits} == {"train": 16, "val": 4, "test": 20}
    assert [int(v) for _, y in data.eval_batches("test", 8) for v in y] == [0] * 10 + [1] * 10
    (tmp_path / "images" / "test" / "light").rename(tmp_path / "images" / "test" / "bright")
    with pytest.raises(UserError, match=r"^data\.name: .*test must have the classes of"):
        load(DataSpec(f"imagefolder:{tmp_path / 'images'}", image_size=8))


def test_an_imagefolder_with_train_but_no_test_is_a_user_error(tmp_path: Path) -> None:
    _image_folder(tmp_path / "images" / "train")  # read as-is, "train" would be a class
    with pytest.raises(UserError, match=r"^data\.name: .*images has train/ but no test/"):
        load(DataSpec(f"imagefolder:{tmp_path / 'images'}", image_size=8))


def test_a_requested_class_without_training_examples_is_a_user_error() -> None:
    # A class the model cannot learn is refused, not left as a dead output.
    with pytest.raises(UserError, match=r"^data\.classes: no training examples of \[42\]"):
        load(DataSpec("digits", classes=(0, 42)))


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
    assert {s: data.size(s) for s in data.splits} == {"train": 24, "val": 6, "test": 6}
    train_x = _xy(data, "train")[0]
    assert train_x.shape[1:] == (1, 28, 28)
    assert Counter(_xy(data, "val")[1].tolist()) == {0: 2, 1: 2, 2: 2}
    assert _xy(data, "test")[1].tolist() == [0] * 6  # the t10k files: the set's own test set
    background = train_x.min()
    assert (train_x[:, :, :2, :] == background).all()  # the padding, rows and columns
    assert (train_x[:, :, :, -2:] == background).all()
    assert len(_rows(train_x)) > 20  # real, mostly distinct images


def test_missing_data_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^data\.data_dir: mnist not found under '.*nowhere'"):
        load(DataSpec("mnist", data_dir=str(tmp_path / "nowhere")))


# -- user data --------------------------------------------------------------------------


def test_user_data_tensors_split_exactly() -> None:
    data = load(DataSpec("tests.usermodels:indexed_images"))
    assert (data.num_classes, data.channels) == (3, 1)
    assert [data.size(s) for s in data.splits] == [36, 12, 12]
    # Every pixel of example i is i, normalized by one increasing affine map: rank = index.
    values = torch.cat([_xy(data, s)[0][:, 0, 0, 0] for s in data.splits])
    index = values.argsort().argsort().tolist()
    train_idx, val_idx = torch.tensor(index[:36]), torch.tensor(index[36:48])
    parts = [set(index[:36]), set(index[36:48]), set(index[48:])]
    assert set().union(*parts) == set(range(60)) and sum(map(len, parts)) == 60
    assert torch.equal(_xy(data, "train")[1], train_idx % 3)
    assert torch.equal(_xy(data, "val")[1], val_idx % 3)
    assert Counter(_xy(data, "val")[1].tolist()) == {0: 4, 1: 4, 2: 4}


def test_user_data_as_a_dataset() -> None:
    data = load(DataSpec("tests.usermodels:digits_dataset"))
    assert (data.num_classes, data.channels) == (2, 1)
    assert [data.size(s) for s in data.splits] == [60, 20, 20]
    assert _xy(data, "train")[0].shape[1:] == (1, 8, 8)


@pytest.mark.parametrize(("name", "message"), [
    ("tests.no_such_module:data", r"cannot import module 'tests\.no_such_module'"),
    ("tests.usermodels:no_such_function", r"has no function 'no_such_function'"),
    ("tests.usermodels:scalars", r"must give inputs with one row per example \(N, \.\.\.\) "
                                 r"and N labels, got inputs \(20,\)"),
])
def test_bad_user_data_is_a_user_error(name: str, message: str) -> None:
    with pytest.raises(UserError, match=rf"^data\.name: .*{message}"):
        load(DataSpec(name))


@pytest.mark.parametrize("fraction", [0, 1.5, 0.001])
def test_unusable_val_fraction_is_a_user_error(fraction: float) -> None:
    # 0 and 1.5 are out of range; 0.001 of 1797 leaves fewer validation examples than classes.
    with pytest.raises(UserError, match=rf"^data\.val_fraction: .*{fraction}"):
        load(DataSpec("digits", val_fraction=fraction))
