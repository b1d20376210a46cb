"""Data modules: Fashion-MNIST idx reading and seeded splits, batch augmentation, image folders, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import DataError, FashionMNIST, batch_augment, create_data, seeded_split
from nas.data.fashion_mnist import DEFAULT_ROOT, read_idx

needs_fmnist = pytest.mark.skipif(not (DEFAULT_ROOT / "train-labels-idx1-ubyte.gz").exists(),
                                  reason=f"Fashion-MNIST not installed at {DEFAULT_ROOT} (apt dataset-fashion-mnist)")


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def _fake_fmnist(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = False) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(root / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, gz)


@needs_fmnist
def test_fashion_mnist_splits_are_seeded_disjoint_and_real():
    a = FashionMNIST(val_size=5000, seed=0)
    assert (a.split_size("train"), a.split_size("val"), a.split_size("test")) == (55000, 5000, 10000)
    train_y = a.get("train", np.arange(a.split_size("train")))[1]
    val_x, val_y = a.get("val", np.arange(5000))
    assert set(train_y.unique().tolist()) == set(range(10)) == set(val_y.unique().tolist())
    assert val_x.shape == (5000, 1, 28, 28) and abs(float(val_x.mean())) < 0.1 and 0.9 < float(val_x.std()) < 1.1
    tr, va = seeded_split(60000, 5000, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 60000
    tr1, va1 = seeded_split(60000, 5000, seed=1)
    assert not np.array_equal(va, va1)
    assert np.array_equal(seeded_split(60000, 5000, seed=0)[1], va)
    labels = read_idx(DEFAULT_ROOT / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(a.get("test", np.arange(10000))[1].numpy(), labels)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_root_override_and_train_limit(tmp_path, gz):
    _fake_fmnist(tmp_path, gz=gz)
    d = create_data("fashion_mnist", root=str(tmp_path), val_size=10, train_limit=30)
    assert (d.split_size("train"), d.split_size("val"), d.split_size("test")) == (30, 10, 20)
    x, y = d.get("test", np.array([3, 4]))
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 4]


def test_fashion_mnist_missing_or_truncated_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        FashionMNIST(root=tmp_path)
    _fake_fmnist(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        FashionMNIST(root=tmp_path, val_size=10)
    with pytest.raises(DataError, match="val_size"):
        seeded_split(10, 10, seed=0)


def test_batch_augment_is_seeded_and_shifts_content():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    a = batch_augment(x, torch.Generator().manual_seed(3), crop_pad=2, flip=True)
    b = batch_augment(x, torch.Generator().manual_seed(3), crop_pad=2, flip=True)
    assert torch.equal(a, b) and a.shape == x.shape
    outs = [batch_augment(x, torch.Generator().manual_seed(s), crop_pad=2) for s in range(20)]
    assert any(not torch.equal(o, x) for o in outs)
    for o in outs:  # every crop is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
        for i in range(2):
            assert any(torch.equal(o[i, 0], padded[i, 0, r:r + 6, c:c + 6]) for r in range(5) for c in range(5))
    flipped = batch_augment(x, torch.Generator().manual_seed(0), flip=True)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))


def _folder(root: Path, classes: dict[str, int], size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_folder_labels_shapes_and_test_root(tmp_path):
    train = _folder(tmp_path / "train", {"cat": 6, "dog": 5, "fox": 4})
    test = _folder(tmp_path / "test", {"cat": 2, "dog": 2, "fox": 1})
    d = create_data("image_folder", root=str(train), test_root=str(test), image_size=8, val_size=3, seed=0)
    assert d.classes == ["cat", "dog", "fox"] and d.n_classes == 3 and d.in_chans == 3
    assert d.split_size("train") + d.split_size("val") == 15 and d.split_size("test") == 5
    batches = list(d.batches("test", batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert torch.cat([b.y for b in batches]).tolist() == [0, 0, 1, 1, 2]
    assert batches[0].x.shape == (2, 3, 8, 8)
    grey = create_data("image_folder", root=str(train), image_size=8, in_chans=1, val_size=3, num_workers=1)
    x = next(iter(grey.batches("train", batch_size=4))).x
    assert x.shape == (4, 1, 8, 8)
    with pytest.raises(DataError, match="test_root"):
        create_data("image_folder", root=str(train), val_size=3).split_size("test")


def test_image_folder_bad_input(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        create_data("image_folder", root=str(tmp_path / "empty"))
    one = _folder(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError, match="only 1 class"):
        create_data("image_folder", root=str(one))
    with pytest.raises(DataError, match="does not exist"):
        create_data("image_folder", root=str(tmp_path / "nope"))
    train = _folder(tmp_path / "train", {"a": 3, "b": 3})
    test = _folder(tmp_path / "test", {"a": 1})
    with pytest.raises(DataError, match="missing"):
        create_data("image_folder", root=str(train), test_root=str(test), val_size=2)


def test_image_folder_with_images_but_no_class_subfolders_is_a_clear_error(tmp_path):
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match=r"no images found .* one sub-folder per class .* found sub-folders \[\]"):
        create_data("image_folder", root=str(tmp_path))
