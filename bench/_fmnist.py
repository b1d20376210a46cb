"""Fashion-MNIST tensors for the NB201 ranking benchmarks, resized once (area) to the benchmark's resolution.

The idx files are read by ``nas.data.fashion_mnist.read_idx`` and standardised with its mean/std; what is
bench-specific is the fixed subsets (``fixed_subset``) and the one-off area down-sampling that the stand-alone table
was produced with (the trainer's on-the-fly resize is bilinear, so the benchmark feeds it pre-resized tensors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nas.data.fashion_mnist import DEFAULT_ROOT, MEAN, STD, read_idx

__all__ = ["FMNIST_DIR", "load_split", "fixed_subset"]

FMNIST_DIR = DEFAULT_ROOT
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def load_split(split: str, root: Path = FMNIST_DIR, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, 1, size, size) float32 standardised, and labels (N,) int64, of ``split`` ('train'/'test').

    ``size != 28`` resizes with area interpolation (anti-aliased down-sampling), once, at load time.
    """
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(_FILES)}")
    img, lab = _FILES[split]
    x = torch.from_numpy(read_idx(root / img).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    y = torch.from_numpy(read_idx(root / lab).astype(np.int64))
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
