"""Fashion-MNIST (Xiao et al., 2017) from its idx files, the engine's embedded default data.

Reads the four gzip'ed idx files that Debian's ``dataset-fashion-mnist`` package installs under
``/usr/share/datasets/fashion-mnist`` (or any directory given as ``root``, gzip'ed or not) with numpy only.
Images stay uint8 in memory and are standardised per batch with the training set's mean and std.
``val`` is a seeded hold-out of the 60k training images; ``test`` is the real 10k test set.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from nas.data.base import DATA, DataError, DataModule, seeded_split

__all__ = ["FashionMNIST", "DEFAULT_ROOT", "read_idx"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MEAN, STD = 0.2860, 0.3530
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally gzip'ed) as a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not a uint8 idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path}: header declares shape {shape} but holds {arr.size} values (truncated file?)")
    return arr.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"Fashion-MNIST file {stem}[.gz] not found in {root}; install Debian's dataset-fashion-mnist "
        f"(files in {DEFAULT_ROOT}) or pass root=<directory with the idx files>"
    )


class FashionMNIST(DataModule):
    """28x28 grey-scale, 10 classes; ``train_limit`` keeps a seeded subset of the training examples."""

    name = "fashion_mnist"
    in_chans = 1
    n_classes = 10
    image_size = 28
    mean, std = (MEAN,), (STD,)
    decode = "uint8 idx images, 28 x 28, as stored"

    def __init__(self, root: str | Path | None = None, *, val_size: int | float = 5000, seed: int = 0,
                 train_limit: int | None = None, test_limit: int | None = None, crop_pad: int = 2,
                 flip: bool = True) -> None:
        self.root = Path(root) if root is not None else DEFAULT_ROOT
        if not self.root.is_dir():
            raise DataError(f"Fashion-MNIST root {self.root} is not a directory")
        self.crop_pad, self.flip = int(crop_pad), bool(flip)
        images, labels = {}, {}
        for split, (img, lab) in _FILES.items():
            images[split] = read_idx(_find(self.root, img))
            labels[split] = read_idx(_find(self.root, lab)).astype(np.int64)
            if images[split].shape[1:] != (28, 28) or len(labels[split]) != len(images[split]):
                raise DataError(f"{split} images {images[split].shape} / labels {labels[split].shape} are not "
                                f"N x 28 x 28 with one label each")
        train, val = seeded_split(len(labels["train"]), val_size, seed, train_limit)
        test = np.arange(len(labels["test"]))[: test_limit or None]
        self._x = {"train": images["train"][train], "val": images["train"][val], "test": images["test"][test]}
        self._y = {"train": labels["train"][train], "val": labels["train"][val], "test": labels["test"][test]}
        self._x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self._x.items()}
        self._y = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self._y.items()}

    def split_size(self, split: str) -> int:
        return int(self._y[self.check_split(split)].numel())

    def get(self, split: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        x = self._x[self.check_split(split)][idx].unsqueeze(1).float().div_(255.0)
        return x.sub_(MEAN).div_(STD), self._y[split][idx]


@DATA.register("fashion_mnist")
def fashion_mnist(**kwargs) -> FashionMNIST:
    """Fashion-MNIST from Debian's dataset-fashion-mnist package (or ``root=``)."""
    return FashionMNIST(**kwargs)
