"""Gradient-boosted regression trees (Friedman 2001; scikit-learn's ``GradientBoostingRegressor``).

Trees split on single features, so they learn a smooth trend such as "accuracy grows with log MACs" only as a
staircase; with ``linear_prior=True`` (default) a least-squares line on the continuous cost features is fitted
first and the trees boost its residuals. The fitted ensemble is exported to flat arrays (children, feature,
threshold, leaf value per node, padded per tree) and predicted here by vectorised traversal, so saving needs no
pickle and a reloaded model predicts bit-identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor

from predictors.base import FeaturePredictor, register
from search_spaces import SearchSpace

__all__ = ["GBTPredictor", "export_trees", "predict_trees"]


def export_trees(model: GradientBoostingRegressor) -> dict[str, np.ndarray]:
    """Padded (n_trees, max_nodes) arrays of a fitted regressor's trees (leaves have children -1)."""
    trees = [est[0].tree_ for est in model.estimators_]
    width = max(t.node_count for t in trees)

    def pad(get: Any, fill: float, dtype: Any) -> np.ndarray:
        out = np.full((len(trees), width), fill, dtype=dtype)
        for i, t in enumerate(trees):
            out[i, : t.node_count] = get(t)
        return out

    return {"left": pad(lambda t: t.children_left, -1, np.int64),
            "right": pad(lambda t: t.children_right, -1, np.int64),
            "feature": pad(lambda t: np.maximum(t.feature, 0), 0, np.int64),
            "threshold": pad(lambda t: t.threshold, 0.0, np.float64),
            "value": pad(lambda t: t.value[:, 0, 0], 0.0, np.float64),
            "depth": np.array([max(t.max_depth, 0) for t in trees], dtype=np.int64)}


def predict_trees(trees: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Sum over trees of the leaf value each row of ``X`` reaches (scikit-learn compares float32 features)."""
    X32 = np.asarray(X, dtype=np.float32)
    n_trees = trees["left"].shape[0]
    node = np.zeros((n_trees, len(X32)), dtype=np.int64)
    rows = np.arange(n_trees)[:, None]
    for _ in range(int(trees["depth"].max(initial=0))):
        left, right = trees["left"][rows, node], trees["right"][rows, node]
        go_left = X32[np.arange(len(X32))[None, :], trees["feature"][rows, node]] <= trees["threshold"][rows, node]
        node = np.where(left < 0, node, np.where(go_left, left, right))
    return trees["value"][rows, node].sum(0)


@register("gbt")
class GBTPredictor(FeaturePredictor):
    """Boosted trees on the features; ``linear_prior`` boosts the residual of a line on the cost features."""

    def __init__(self, space: SearchSpace, *, features: str | Sequence[str] = "auto", target: str = "auto",
                 seed: int = 0, n_estimators: int = 300, learning_rate: float = 0.05, max_depth: int = 3,
                 subsample: float = 0.8, linear_prior: bool = True) -> None:
        super().__init__(space, features=features, target=target, seed=seed)
        if n_estimators < 1 or max_depth < 1 or not 0.0 < subsample <= 1.0 or learning_rate <= 0:
            raise ValueError(f"need n_estimators >= 1, max_depth >= 1, 0 < subsample <= 1, learning_rate > 0; got "
                             f"{n_estimators}, {max_depth}, {subsample}, {learning_rate}")
        self.n_estimators, self.learning_rate, self.max_depth = int(n_estimators), float(learning_rate), int(max_depth)
        self.subsample, self.linear_prior = float(subsample), bool(linear_prior)
        self._trees: dict[str, np.ndarray] = {}
        self._line = np.zeros(0)
        self._offset = 0.0

    def _continuous(self, X: np.ndarray) -> np.ndarray:
        assert self.encoder is not None
        return X[:, ~self.encoder.binary_mask()]

    def _baseline(self, X: np.ndarray) -> np.ndarray:
        if not len(self._line):
            return np.zeros(len(X))
        return self._continuous(X) @ self._line[1:] + self._line[0]

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self._line = np.zeros(0)
        C = self._continuous(X)
        if self.linear_prior and C.shape[1]:
            A = np.hstack([np.ones((len(X), 1)), C])
            # a small ridge keeps the line defined when there are more cost features than measurements
            self._line = np.linalg.solve(A.T @ A + 1e-3 * np.eye(A.shape[1]), A.T @ y)
        residual = y - self._baseline(X)
        model = GradientBoostingRegressor(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                                          max_depth=self.max_depth, subsample=self.subsample,
                                          random_state=self.seed).fit(X, residual)
        self._trees = export_trees(model)
        self._trees["value"] = self._trees["value"] * self.learning_rate
        self._offset = float(np.asarray(model.init_.constant_).reshape(-1)[0])

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self._baseline(X) + self._offset + predict_trees(self._trees, X)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"offset": self._offset}, {**{f"tree.{k}": v for k, v in self._trees.items()}, "line": self._line}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._trees = {k[5:]: v for k, v in arrays.items() if k.startswith("tree.")}
        self._line, self._offset = arrays["line"], float(meta["offset"])
