"""A user's image folder with one sub-folder per class (torchvision ``ImageFolder`` layout).

``root/<class>/<image>``; images are decoded with PIL, converted to grey or RGB, resized (shorter side) and
centre-cropped to ``image_size``, and normalised, so every example has the same shape and the trainer can
resize whole batches to an architecture's resolution. ``val`` is a seeded hold-out of ``root``; ``test`` comes
from ``test_root`` (same class names) when given. With ``num_workers > 0`` batches are decoded in DataLoader
worker processes; with ``cache=True`` the decoded uint8 images are kept in memory after first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from nas.data.base import DATA, Batch, DataError, DataModule, seeded_split

__all__ = ["ImageFolderData", "scan_folder"]

# The image files an ImageFolder layout holds (the suffixes torchvision's ImageFolder accepts, all PIL can decode).
# torchvision itself is imported where images are decoded: importing it pulls in torch._dynamo (~1.3 s), which every
# command that never reads a folder (search, export, profile, their errors) would pay at start-up.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_folder(root: Path, classes: Sequence[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folders) and (file, label) pairs; clear errors for empty or one-class folders."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(classes) if classes is not None else found
    samples = []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"class folder {folder} is missing (classes from the training folder: {names})")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        samples += [(p, label) for p in files]
    counts = np.bincount([lab for _, lab in samples], minlength=len(names)) if samples else np.zeros(0)
    if not samples:
        raise DataError(f"no images found in {root}: expected one sub-folder per class holding "
                        f"{'/'.join(sorted(IMG_EXTENSIONS))} files, found sub-folders {found}")
    non_empty = [n for n, c in zip(names, counts) if c]
    if classes is None and len(non_empty) < 2:
        raise DataError(f"image folder {root} has images of only {len(non_empty)} class(es) {non_empty}; "
                        f"classification needs at least 2 class sub-folders with images")
    return names, samples


class _Decoded(Dataset):
    def __init__(self, samples: list[tuple[Path, int]], size: int, mode: str) -> None:
        self.samples, self.size, self.mode = samples, size, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.transforms.v2 import functional as TF  # noqa: N812 (see IMG_EXTENSIONS)

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = TF.pil_to_tensor(im.convert(self.mode))
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:  # PIL raises all three for broken files
            raise DataError(f"image {path} cannot be decoded ({type(exc).__name__}: {exc}); remove or replace "
                            "it") from None
        img = TF.center_crop(TF.resize(img, [self.size], antialias=True), [self.size, self.size])
        return img, label


class ImageFolderData(DataModule):
    """Images in class sub-folders; every image is resized/cropped to ``image_size`` square."""

    name = "image_folder"

    def __init__(self, root: str | Path, *, test_root: str | Path | None = None, image_size: int = 32,
                 in_chans: int = 3, val_size: int | float = 0.1, seed: int = 0, train_limit: int | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, crop_pad: int = 0,
                 flip: bool = True, num_workers: int = 0, cache: bool = True) -> None:
        if in_chans not in (1, 3):
            raise DataError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
        self.classes, samples = scan_folder(Path(root))
        self.in_chans, self.n_classes, self.image_size = in_chans, len(self.classes), int(image_size)
        self.crop_pad, self.flip, self.num_workers, self.cache = int(crop_pad), bool(flip), num_workers, cache
        mode = "L" if in_chans == 1 else "RGB"
        default_mean, default_std = ((0.5,), (0.5,)) if in_chans == 1 else ((0.485, 0.456, 0.406),
                                                                            (0.229, 0.224, 0.225))
        self.decode = (f"PIL convert({mode!r}), resize the shorter side to {self.image_size} (bilinear, antialiased), "
                       f"centre-crop {self.image_size} x {self.image_size}")
        self.mean = torch.tensor(mean or default_mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std or default_std, dtype=torch.float32).view(1, -1, 1, 1)
        train, val = seeded_split(len(samples), val_size, seed, train_limit)
        self._sets = {"train": _Decoded([samples[i] for i in train], self.image_size, mode),
                      "val": _Decoded([samples[i] for i in val], self.image_size, mode)}
        if test_root is not None:
            _, test = scan_folder(Path(test_root), self.classes)
            self._sets["test"] = _Decoded(test, self.image_size, mode)
        self._cache: dict[str, dict[int, torch.Tensor]] = {k: {} for k in self._sets}

    def _set(self, split: str) -> _Decoded:
        if self.check_split(split) not in self._sets:
            raise DataError(f"split {split!r} unavailable: pass test_root=<folder> for a test set")
        return self._sets[split]

    def split_size(self, split: str) -> int:
        return len(self._set(split))

    def _normalise(self, imgs: torch.Tensor) -> torch.Tensor:
        return (imgs.float().div_(255.0) - self.mean) / self.std

    def _load(self, split: str, i: int) -> torch.Tensor:
        cache = self._cache[split]
        if i not in cache:
            img = self._set(split)[i][0]
            if not self.cache:
                return img
            cache[i] = img
        return cache[i]

    def get(self, split: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self._set(split)
        imgs = torch.stack([self._load(split, int(i)) for i in indices])
        labels = torch.tensor([ds.samples[int(i)][1] for i in indices], dtype=torch.long)
        return self._normalise(imgs), labels

    def batches(self, split: str, indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 256, *,
                weights: np.ndarray | None = None, drop_last: bool = False) -> Iterator[Batch]:
        if self.num_workers == 0:
            yield from super().batches(split, indices, batch_size, weights=weights, drop_last=drop_last)
            return
        idx = np.arange(self.split_size(split)) if indices is None else np.asarray(indices)
        stop = len(idx) - len(idx) % batch_size if drop_last else len(idx)
        chunks = [idx[s : s + batch_size].tolist() for s in range(0, stop, batch_size)]
        loader = DataLoader(self._set(split), batch_sampler=chunks, num_workers=self.num_workers)
        for start, (imgs, labels) in zip(range(0, stop, batch_size), loader):
            w = None if weights is None else torch.as_tensor(weights[start : start + batch_size], dtype=torch.float32)
            yield Batch(self._normalise(imgs), labels.long(), torch.as_tensor(idx[start : start + len(labels)]), w)


@DATA.register("image_folder")
def image_folder(**kwargs) -> ImageFolderData:
    """Any folder of images in class sub-folders (``root=``; optional ``test_root=``)."""
    return ImageFolderData(**kwargs)
