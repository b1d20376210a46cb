"""Pareto fronts and hypervolume in minimisation form (pymoo's non-dominated sorting and HV indicator).

Feasibility comes first (Deb's rule, as in pymoo and Optuna): when any point is feasible, the front is taken among
feasible points only; otherwise there is no front. Hypervolume is computed on the exact non-dominated set (not a
convex hull as in DyNAS-T's notebook, which under-counts concave fronts).
"""

from __future__ import annotations

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

__all__ = ["pareto_front", "hypervolume", "default_reference_point", "hv_improvement_2d"]


def pareto_front(F: np.ndarray, cv: np.ndarray | None = None) -> np.ndarray:
    """Indices of the non-dominated feasible rows of ``F`` (minimisation), sorted by the first objective.

    Rows with equal objective vectors are all kept (they are different architectures with the same values).
    """
    F = np.asarray(F, dtype=np.float64)
    if F.ndim != 2:
        raise ValueError(f"F must be (n, n_obj), got shape {F.shape}")
    idx = np.arange(len(F)) if cv is None else np.flatnonzero(np.asarray(cv) <= 0)
    if not len(idx):
        return idx
    front = idx[NonDominatedSorting().do(F[idx], only_non_dominated_front=True)]
    return front[np.lexsort(F[front].T[::-1])]


def default_reference_point(F: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Nadir of ``F`` pushed out by ``margin`` times the range (1.1 x worst for positive objectives with ideal 0)."""
    F = np.asarray(F, dtype=np.float64)
    lo, hi = F.min(axis=0), F.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    return hi + margin * span


def hypervolume(F: np.ndarray, ref_point: np.ndarray) -> float:
    """Volume dominated by ``F`` (minimisation) and bounded by ``ref_point``; points beyond it contribute nothing."""
    F, ref = np.asarray(F, dtype=np.float64), np.asarray(ref_point, dtype=np.float64)
    if F.ndim != 2 or ref.shape != (F.shape[1],):
        raise ValueError(f"F must be (n, {ref.shape[0] if ref.ndim else '?'}) to match ref_point {ref.shape}, "
                         f"got {F.shape}")
    inside = F[np.all(F < ref, axis=1)]
    return float(HV(ref_point=ref)(inside)) if len(inside) else 0.0


def hv_improvement_2d(front: np.ndarray, candidates: np.ndarray, ref_point: np.ndarray) -> np.ndarray:
    """Exact hypervolume gain of adding each candidate (separately) to a 2-objective ``front``, vectorised.

    Gain = area of the candidate's box up to ``ref_point`` minus the part of it the front already dominates; the
    front clipped to the box stays a staircase, so that part is one sum per candidate.
    """
    front, C, ref = (np.asarray(a, dtype=np.float64) for a in (front, candidates, ref_point))
    if front.ndim != 2 or front.shape[1] != 2 or C.ndim != 2 or C.shape[1] != 2:
        raise ValueError(f"hv_improvement_2d needs (k, 2) and (m, 2) arrays, got {front.shape}, {C.shape}")
    box = np.clip(ref[0] - C[:, 0], 0, None) * np.clip(ref[1] - C[:, 1], 0, None)
    if not len(front):
        return box
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    front = front[np.minimum.accumulate(front[:, 1]) == front[:, 1]]  # drop dominated points
    x = np.minimum(np.maximum(front[None, :, 0], C[:, None, 0]), ref[0])
    y = np.minimum(np.maximum(front[None, :, 1], C[:, None, 1]), ref[1])
    x_next = np.concatenate([x[:, 1:], np.full((len(C), 1), ref[0])], axis=1)
    covered = ((x_next - x) * (ref[1] - y)).sum(axis=1)
    return np.clip(box - covered, 0.0, None)
