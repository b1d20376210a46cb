"""A non-negative linear latency model over physical layer features, fitted on a table's own entries.

nn-Meter (Zhang et al., MobiSys 2021) prices kernels with regression on shape/FLOPs features; here a
non-negative least-squares fit (``scipy.optimize.nnls``) of relative error on the features of
:mod:`hw_profiles.features` plays that role. Non-negative coefficients keep every prediction physically ordered
(more MACs or bytes never make a layer faster); the fit minimises squared *relative* error, the quantity latency
predictors are judged by (fraction within +-10%, RMSPE). The model never prices a layer at 0 ms: predictions are
floored at half the smallest latency it was fitted on. Its error estimate is the cross-validated RMSPE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from hw_profiles.features import FEATURE_NAMES, FeatureConfig, feature_matrix
from search_spaces.layers import LayerSpec

__all__ = ["LinearCostModel", "FitError", "fit_linear_cost", "relative_errors"]


class FitError(ValueError):
    """A latency model cannot be fitted from the given data."""


def relative_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return (np.asarray(pred, dtype=float) - np.asarray(true, dtype=float)) / np.asarray(true, dtype=float)


@dataclass(frozen=True)
class LinearCostModel:
    """``latency = max(features @ coef, floor)``; ``rel_error`` is the one-sigma relative error estimate."""

    coef: tuple[float, ...]
    floor: float
    rel_error: float
    features: FeatureConfig = field(default_factory=FeatureConfig)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        coef = tuple(float(c) for c in self.coef)
        if len(coef) != len(FEATURE_NAMES):
            raise ValueError(f"coef needs one value per feature {list(FEATURE_NAMES)}, got {len(coef)} values")
        if any(c < 0 or not np.isfinite(c) for c in coef):
            raise ValueError(f"coefficients must be finite and >= 0, got {coef}")
        if not (self.floor > 0 and self.rel_error >= 0):
            raise ValueError(
                f"floor must be > 0 and rel_error >= 0, got floor={self.floor}, rel_error={self.rel_error}"
            )
        object.__setattr__(self, "coef", coef)

    def predict(self, specs: Sequence[LayerSpec]) -> np.ndarray:
        if not specs:
            return np.zeros(0)
        return np.maximum(feature_matrix(specs, self.features) @ np.asarray(self.coef), self.floor)

    def to_dict(self) -> dict[str, Any]:
        return {"feature_names": list(FEATURE_NAMES), "coef": list(self.coef), "floor": self.floor,
                "rel_error": self.rel_error, "features": self.features.to_dict(), "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearCostModel:
        allowed = {"feature_names", "coef", "floor", "rel_error", "features", "info"}
        unknown = sorted(set(d) - allowed)
        missing = sorted({"feature_names", "coef", "floor", "rel_error"} - set(d))
        if unknown or missing:
            raise ValueError(f"latency model dict: unknown fields {unknown}, missing fields {missing}")
        if list(d["feature_names"]) != list(FEATURE_NAMES):
            raise ValueError(f"model was fitted on features {d['feature_names']}, this code computes "
                             f"{list(FEATURE_NAMES)}; refit it")
        return cls(coef=tuple(d["coef"]), floor=float(d["floor"]), rel_error=float(d["rel_error"]),
                   features=FeatureConfig(**d.get("features", {})), info=dict(d.get("info", {})))


def _nnls_relative(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, _ = nnls(a / y[:, None], np.ones(len(y)))
    return coef


def fit_linear_cost(specs: Sequence[LayerSpec], latencies: Sequence[float] | np.ndarray, *,
                    features: FeatureConfig | None = None, folds: int = 5, seed: int = 0,
                    groups: Sequence[Any] | None = None) -> LinearCostModel:
    """Fit on (layer, latency) pairs; the error estimate is the RMSPE of out-of-fold predictions.

    ``groups`` (e.g. the input resolution of each entry) makes the cross-validation leave one group out, which
    measures extrapolation to an unseen group rather than interpolation.
    """
    y = np.asarray(latencies, dtype=float)
    if len(specs) != len(y):
        raise FitError(f"{len(specs)} layers but {len(y)} latencies")
    if len(y) < 2 or np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise FitError(f"need >= 2 positive, finite latencies to fit, got {len(y)} (min {y.min() if len(y) else None})")
    cfg = features or FeatureConfig()
    a = feature_matrix(specs, cfg)
    coef = _nnls_relative(a, y)
    fold_of = _folds(len(y), folds, seed, groups)
    oof = np.empty_like(y)
    for f in np.unique(fold_of):
        test = fold_of == f
        if test.all():  # one fold only: fall back to in-sample error
            oof = a @ coef
            break
        oof[test] = a[test] @ _nnls_relative(a[~test], y[~test])
    floor = 0.5 * float(y.min())
    rel = relative_errors(np.maximum(oof, floor), y)
    cv = "leave-one-group-out" if groups is not None else f"{len(np.unique(fold_of))}-fold"
    info = {"n_fit": int(len(y)), "cv": cv,
            "cv_rmspe": float(np.sqrt(np.mean(rel**2))), "cv_within10": float(np.mean(np.abs(rel) <= 0.10)),
            "cv_within5": float(np.mean(np.abs(rel) <= 0.05))}
    return LinearCostModel(coef=tuple(coef), floor=floor, rel_error=info["cv_rmspe"], features=cfg, info=info)


def _folds(n: int, folds: int, seed: int, groups: Sequence[Any] | None) -> np.ndarray:
    if groups is not None:
        if len(groups) != n:
            raise FitError(f"{len(groups)} groups for {n} latencies")
        _, idx = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        return idx
    k = max(1, min(folds, n))
    return np.random.default_rng(seed).permutation(np.arange(n) % k)
