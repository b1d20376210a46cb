"""DyNAS-T's accuracy predictor (IntelLabs/DyNAS-T ``dynast/predictors``): Ridge or RBF-SVR, whichever a k-fold
grid search scores better on mean absolute percentage error.

DyNAS-T grids Ridge ``alpha`` over 0.1..10 and SVR ``C`` over 1..100 (100 values each, ``gamma='auto'``,
``epsilon=0``) and divides the labels by ``10**(floor(log10(max|y|)) - 1)``. The grids here default to 20 values
(DyNAS-T's 2 x 100 x 5 fits take ~44 s at n = 500; the winner is the same to a few 1e-3 of tau). Fitting uses
scikit-learn; the fitted model is kept as plain arrays (Ridge ``coef``/``intercept``, SVR support vectors,
dual coefficients, intercept and gamma) and predicted by the code below, so saving needs no pickle.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.svm import SVR

from predictors.base import FeaturePredictor, register
from search_spaces import SearchSpace

__all__ = ["RidgeSVRPredictor"]


@register("ridge_svr")
class RidgeSVRPredictor(FeaturePredictor):
    """Ridge vs RBF-SVR chosen by ``cv``-fold grid search on MAPE (DyNAS-T). ``chosen`` names the winner."""

    def __init__(self, space: SearchSpace, *, features: str | Sequence[str] = "auto", target: str = "identity",
                 seed: int = 0, n_grid: int = 10, cv: int = 5) -> None:
        super().__init__(space, features=features, target=target, seed=seed)
        if n_grid < 1 or cv < 2:
            raise ValueError(f"need n_grid >= 1 and cv >= 2, got n_grid={n_grid}, cv={cv}")
        self.n_grid, self.cv = int(n_grid), int(cv)
        self.chosen = ""
        self._arrays: dict[str, np.ndarray] = {}
        self._scale = 1.0

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        peak = float(np.max(np.abs(y)))
        identity = getattr(self._target_tf, "chosen", self.target) == "identity"
        self._scale = 10.0 ** (np.floor(np.log10(peak)) - 1) if peak > 0 and identity else 1.0
        # DyNAS-T scores by MAPE on accuracies; on a transformed (zero-centred) scale MAPE is meaningless
        scoring = "neg_mean_absolute_percentage_error" if identity else "neg_mean_squared_error"
        ys = y / self._scale
        folds = KFold(n_splits=min(self.cv, len(y)), shuffle=True, random_state=self.seed)
        grids = {"ridge": (Ridge(), {"alpha": np.linspace(0.1, 10.0, self.n_grid)}),
                 "svr": (SVR(kernel="rbf", gamma="auto", epsilon=0.0), {"C": np.linspace(1.0, 100.0, self.n_grid)})}
        best: tuple[float, str, Any] = (-np.inf, "", None)
        for name, (est, grid) in grids.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                search = GridSearchCV(est, grid, cv=folds, scoring=scoring).fit(X, ys)
            if search.best_score_ > best[0]:
                best = (float(search.best_score_), name, search.best_estimator_)
        self.chosen, model = best[1], best[2]
        if self.chosen == "ridge":
            self._arrays = {"coef": np.asarray(model.coef_, dtype=np.float64).reshape(-1),
                            "intercept": np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))}
        else:
            self._arrays = {"support": np.asarray(model.support_vectors_, dtype=np.float64),
                            "dual": np.asarray(model.dual_coef_, dtype=np.float64).reshape(-1),
                            "intercept": np.asarray(model.intercept_, dtype=np.float64).reshape(-1),
                            "gamma": np.array([float(model._gamma)])}

    def _predict(self, X: np.ndarray) -> np.ndarray:
        a = self._arrays
        if self.chosen == "ridge":
            out = X @ a["coef"] + a["intercept"][0]
        else:
            sv = a["support"]
            d2 = (X**2).sum(1)[:, None] + (sv**2).sum(1)[None, :] - 2.0 * X @ sv.T
            out = np.exp(-a["gamma"][0] * np.maximum(d2, 0.0)) @ a["dual"] + a["intercept"][0]
        return out * self._scale

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"chosen": self.chosen, "scale": self._scale}, dict(self._arrays)

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if meta["chosen"] not in ("ridge", "svr"):
            raise ValueError(f"saved ridge_svr model is {meta['chosen']!r}; expected 'ridge' or 'svr'")
        self.chosen, self._scale, self._arrays = meta["chosen"], float(meta["scale"]), dict(arrays)
