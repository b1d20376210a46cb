"""Data modules (registry ``DATA``): Fashion-MNIST (embedded default) and image folders in class sub-folders."""

from __future__ import annotations

from nas.data.base import DATA, SPLITS, Batch, DataError, DataModule, batch_augment, create_data, seeded_split
from nas.data.fashion_mnist import FashionMNIST
from nas.data.folder import ImageFolderData, scan_folder

__all__ = [
    "DATA", "SPLITS", "Batch", "DataError", "DataModule", "batch_augment", "create_data", "seeded_split",
    "FashionMNIST", "ImageFolderData", "scan_folder",
]
