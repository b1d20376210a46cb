"""Data modules: named train/val/test splits served as index-addressed batches, built once per run.

A data module holds (or lazily decodes) a dataset and answers ``get(split, indices) -> (images, labels)`` with
normalised float images at its native ``image_size``. Batches are addressed by example indices so the trainer can
store an epoch's order in a checkpoint (exact resume) and so samplers may re-weight or choose the examples of the
next epoch (PA&DA's importance sampling). Training augmentation is applied to whole batches with an explicit
``torch.Generator`` seeded per step, which keeps runs reproducible without saving augmentation RNG streams.
The held-out ``val`` split is a seeded subset of the training data (used for subnet evaluation and BN
recalibration); ``test`` is the dataset's real test set.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.checks import as_float, as_int
from nas.registry import Registry
from search_spaces.errors import BadInputError

__all__ = ["DATA", "SPLITS", "Batch", "DataError", "DataModule", "create_data", "seeded_split", "batch_augment",
           "check_compatible"]

SPLITS = ("train", "val", "test")


class DataError(BadInputError):
    """Bad data or data configuration (missing files, empty folder, too few classes, bad split sizes)."""



def check_compatible(space: Any, data: Any, *, model: str | None = None) -> None:
    """The data's channels and classes must match what the space's networks take and predict.

    ``model`` names a trained supernet the space comes from (its checkpoint), for the message."""
    want = (getattr(space, "in_chans", data.in_chans), getattr(space, "n_classes", data.n_classes))
    if want == (data.in_chans, data.n_classes):
        return
    who = f"the supernet {model}" if model else f"space {space.name!r}"
    fix = ("pass the data it was trained on (data=...)" if model else
           "pick a matching search_space or override its kwargs")
    raise DataError(f"data {data.name!r} has {data.in_chans} channel(s) and {data.n_classes} classes, but {who} "
                    f"expects in_chans={want[0]}, n_classes={want[1]}; {fix}")

@dataclass
class Batch:
    """Images ``x`` (N, C, H, W), labels ``y`` (N,), their example indices in the split, optional loss weights."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    weight: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        w = None if self.weight is None else self.weight.to(device)
        return Batch(self.x.to(device), self.y.to(device), self.index.to(device), w)

    def __len__(self) -> int:
        return int(self.y.numel())


def seeded_split(n: int, val_size: int | float, seed: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (train, val) index arrays of ``range(n)`` from a seeded permutation.

    ``val_size`` is a count or a fraction in (0, 1); ``limit`` caps the number of training examples kept.
    """
    val_size = as_float(val_size, "data.kwargs.val_size", minimum=0.0)
    n_val = int(round(val_size * n)) if 0 < val_size < 1 else int(val_size)
    if not 0 < n_val < n:
        raise DataError(f"val_size must leave at least one train and one val example of {n}; got {val_size!r}")
    perm = np.random.default_rng(seed).permutation(n)
    val, train = perm[:n_val], perm[n_val:]
    if limit is not None:
        train = train[:as_int(limit, "data.kwargs.train_limit", minimum=1)]
    return np.sort(train), np.sort(val)


def batch_augment(x: torch.Tensor, gen: torch.Generator, *, crop_pad: int = 0, flip: bool = False) -> torch.Tensor:
    """Random crop with zero padding ``crop_pad`` and random horizontal flip, per example, from ``gen``."""
    n, _, h, w = x.shape
    if crop_pad > 0:
        padded = F.pad(x, (crop_pad,) * 4)
        oy = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * crop_pad + 1, (n,), generator=gen)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, :]
        x = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


class DataModule(abc.ABC):
    """Base class: subclasses set ``name``, ``in_chans``, ``n_classes``, ``image_size`` and implement two methods."""

    name: str
    in_chans: int
    n_classes: int
    image_size: int
    crop_pad: int = 0
    flip: bool = False

    @abc.abstractmethod
    def split_size(self, split: str) -> int:
        """Number of examples in ``split`` (one of :data:`SPLITS`)."""

    @abc.abstractmethod
    def get(self, split: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images (len, C, H, W) and int64 labels of the given examples of ``split``."""

    def check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        return split

    def batches(self, split: str, indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 256, *,
                weights: np.ndarray | None = None, drop_last: bool = False) -> Iterator[Batch]:
        """Batches of ``split`` in the order of ``indices`` (default: all, in order), with optional loss weights."""
        idx = np.arange(self.split_size(self.check_split(split))) if indices is None else np.asarray(indices)
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        stop = len(idx) - len(idx) % batch_size if drop_last else len(idx)
        for start in range(0, stop, batch_size):
            part = idx[start : start + batch_size]
            x, y = self.get(split, part)
            w = None if weights is None else torch.as_tensor(weights[start : start + batch_size], dtype=torch.float32)
            yield Batch(x, y, torch.as_tensor(part, dtype=torch.long), w)

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Training augmentation of a batch (the module's ``crop_pad``/``flip`` settings)."""
        if not self.crop_pad and not self.flip:
            return x
        return batch_augment(x, gen, crop_pad=self.crop_pad, flip=self.flip)

    def fixed_subset(self, split: str, n: int, seed: int) -> np.ndarray:
        """A seeded, sorted subset of ``n`` example indices of ``split`` (all of it when smaller)."""
        size = self.split_size(self.check_split(split))
        if n < 1:
            raise DataError(f"subset size must be >= 1, got {n}")
        return np.sort(np.random.default_rng(seed).permutation(size)[: min(n, size)])

    def calibration_batches(self, n_images: int = 2000, batch_size: int = 200, seed: int = 0,
                            split: str = "train") -> list[torch.Tensor]:
        """The fixed image batches used for BN recalibration (OFA: 2000 training images in batches of 200)."""
        idx = self.fixed_subset(split, n_images, seed)
        return [b.x for b in self.batches(split, idx, batch_size)]

    def preprocessing(self) -> dict[str, Any]:
        """How raw images become this module's inputs, for a deployment that has no engine code.

        Subclasses set ``mean``/``std`` (per channel, applied after scaling pixels to [0, 1]) and may override
        ``decode`` (how a stored image reaches ``native_size``) and ``channel_order``."""
        mean, std = getattr(self, "mean", None), getattr(self, "std", None)
        if mean is None or std is None:
            raise DataError(f"data module {self.name!r} does not declare its normalisation (mean/std)")
        flat = [[float(v) for v in torch.as_tensor(t, dtype=torch.float64).flatten()] for t in (mean, std)]
        return {"native_size": int(self.image_size), "channels": int(self.in_chans),
                "channel_order": getattr(self, "channel_order", "L" if self.in_chans == 1 else "RGB"),
                "layout": "NCHW", "dtype": "float32", "scale": "pixel / 255", "mean": flat[0], "std": flat[1],
                "normalise": "(pixel / 255 - mean[c]) / std[c]", "decode": getattr(self, "decode", "none")}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "in_chans": self.in_chans, "n_classes": self.n_classes,
                "image_size": self.image_size, **{f"n_{s}": self._safe_size(s) for s in SPLITS}}

    def _safe_size(self, split: str) -> int | None:
        try:
            return self.split_size(split)
        except DataError:
            return None


DATA: Registry[DataModule] = Registry("data module")


def create_data(name: str, **kwargs: Any) -> DataModule:
    """Create a registered data module (``create_data("fashion_mnist", val_size=5000)``)."""
    return DATA.create(name, **kwargs)
