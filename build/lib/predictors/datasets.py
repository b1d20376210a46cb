"""Readers for measured-accuracy tables the predictors are fitted and benchmarked on (paths given by the user).

* OFA-style tables (DyNAS-T's result CSVs): a ``Sub-network`` column holding OFA's Python-literal arch dict and a
  ``Top-1 Acc (%)`` column. Architectures are canonicalised by the space (inactive blocks dropped), so the same
  network listed with different padding counts once; repeated measurements are averaged.
* NAS-Bench-201 tables: one row per benchmark index with an architecture-string column and accuracy columns.
"""

from __future__ import annotations

import ast
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces import NB201IndexMap, NB201Space, SearchSpace

__all__ = ["average_duplicates", "read_ofa_accuracy_csv", "read_nb201_accuracy_csv"]


def average_duplicates(archs: Sequence[Any], y: Sequence[float]) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Group equal (canonical) architectures: (unique archs in first-seen order, mean target, count)."""
    groups: dict[Any, list[float]] = {}
    for a, v in zip(archs, y):
        groups.setdefault(a, []).append(float(v))
    uniq = list(groups)
    return uniq, np.array([np.mean(groups[a]) for a in uniq]), np.array([len(groups[a]) for a in uniq])


def _rows(path: str | Path, columns: Sequence[str]) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise KeyError(f"{path} lacks column(s) {missing}; it has {reader.fieldnames}")
        return list(reader)


def read_ofa_accuracy_csv(path: str | Path, space: SearchSpace, *, arch_column: str = "Sub-network",
                          target_column: str = "Top-1 Acc (%)") -> tuple[list[Any], np.ndarray, np.ndarray]:
    """(unique archs, mean measured accuracy, number of measurements) from an OFA/DyNAS-T style CSV."""
    rows = _rows(path, (arch_column, target_column))
    archs = [space.from_dict(ast.literal_eval(r[arch_column])) for r in rows]
    return average_duplicates(archs, [float(r[target_column]) for r in rows])


def read_nb201_accuracy_csv(path: str | Path, column: str = "CIFAR10TestAccuracy200Epochs", *,
                            arch_column: str = "ArchitectureString",
                            space: NB201Space | None = None) -> tuple[list[Any], np.ndarray]:
    """All architectures of a NAS-Bench-201 table in benchmark index order, with the chosen accuracy column."""
    rows = _rows(path, (arch_column, column))
    index = NB201IndexMap([r[arch_column] for r in rows], space=space)
    return [index.arch(i) for i in range(len(index))], np.array([float(r[column]) for r in rows])
