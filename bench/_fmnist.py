"""Fashion-MNIST tensors for the NB201 ranking benchmarks, read from the Debian package's idx files.

Kept minimal and bench-local: the benchmarks switch to ``nas.data``'s Fashion-MNIST module once it exists.
Images are scaled to [0, 1] and standardised with the training set's mean/std (0.2860, 0.3530).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

__all__ = ["FMNIST_DIR", "load_split", "fixed_subset"]

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
MEAN, STD = 0.2860, 0.3530


def _read(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as fh:
        return np.frombuffer(fh.read(), np.uint8, offset=offset)


def load_split(split: str, root: Path = FMNIST_DIR, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, 1, size, size) float32 standardised, and labels (N,) int64, of ``split`` ('train'/'test').

    ``size != 28`` resizes with area interpolation (anti-aliased down-sampling), once, at load time.
    """
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(_FILES)}")
    img, lab = _FILES[split]
    x = torch.from_numpy(_read(root / img, 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    y = torch.from_numpy(_read(root / lab, 8).astype(np.int64))
    if size != 28:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area" if size < 28 else "bilinear")
    return (x - MEAN) / STD, y


def fixed_subset(n_total: int, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes from a seeded permutation of ``range(n_total)``."""
    if sum(sizes) > n_total:
        raise ValueError(f"subset sizes {sizes} sum to more than {n_total} examples")
    perm = np.random.default_rng(seed).permutation(n_total)
    out, start = [], 0
    for n in sizes:
        out.append(np.sort(perm[start:start + n]))
        start += n
    return out
