"""A weighted average of registered predictors (model averaging / stacking with fixed weights).

Different inductive biases err on different architectures: a GP on cost-aware features is smooth in compute, an MLP
learns interactions of choices. Averaging their predictions is a cheap, robust gain in rank correlation. The
ensemble's ``predict_std`` is the standard deviation of the mixture: members' own variances (where they have one)
plus their disagreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from predictors.base import PREDICTORS, Predictor, ProbabilisticPredictor, register
from search_spaces import SearchSpace

__all__ = ["EnsemblePredictor", "DEFAULT_MEMBERS", "DEFAULT_WEIGHTS"]

#: GP on cost-aware features + a small deep ensemble of MLPs on the same features
DEFAULT_MEMBERS: tuple[tuple[str, dict[str, Any]], ...] = (("gp", {}), ("mlp_ensemble", {"members": 3}))
#: weights of :data:`DEFAULT_MEMBERS` when none are given: the GP is the better member (OFA-MBv3 ImageNet, draws
#: 100-104, not the benchmark's reported ones, GP with ard_prior 1.0: Kendall tau at 500 samples 0.9641 with equal
#: weights, 0.9645 with these; at 100 samples 0.9457 -> 0.9469)
DEFAULT_WEIGHTS = (0.7, 0.3)


@register("ensemble")
class EnsemblePredictor(ProbabilisticPredictor):
    """``members``: (registered name, keyword arguments) pairs; ``weights`` default to :data:`DEFAULT_WEIGHTS` for
    the default members and to equal weights otherwise."""

    def __init__(self, space: SearchSpace, *, members: Sequence[Sequence[Any]] = DEFAULT_MEMBERS,
                 weights: Sequence[float] | None = None, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        self.members = [[str(name), dict(kwargs)] for name, kwargs in members]
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        default = self.members == [[n, dict(kw)] for n, kw in DEFAULT_MEMBERS]
        w = (np.asarray(DEFAULT_WEIGHTS if default else np.ones(len(self.members)), dtype=np.float64)
             if weights is None else np.asarray(weights, dtype=np.float64))
        if w.shape != (len(self.members),) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be {len(self.members)} non-negative numbers with a positive sum, "
                             f"got {weights}")
        self.weights = None if weights is None else [float(x) for x in w]
        self._w = w / w.sum()
        self._models: list[Predictor] = [
            PREDICTORS.create(str(name), space=space, **{"seed": self.seed + k, **dict(kwargs)})
            for k, (name, kwargs) in enumerate(self.members)]

    @property
    def fitted(self) -> bool:
        return all(m.fitted for m in self._models)

    @property
    def models(self) -> list[Predictor]:
        return list(self._models)

    def _fit_archs(self, archs: list[Any], y: np.ndarray) -> None:
        for m in self._models:
            m.fit(archs, y)

    def _means(self, archs: list[Any]) -> np.ndarray:
        return np.stack([m.predict(archs) for m in self._models])

    def _predict_archs(self, archs: list[Any]) -> np.ndarray:
        return self._w @ self._means(archs)

    def _predict_std_archs(self, archs: list[Any]) -> np.ndarray:
        means = self._means(archs)
        var = np.stack([m.predict_std(archs) ** 2 if isinstance(m, ProbabilisticPredictor) else np.zeros(len(archs))
                        for m in self._models])
        mix = self._w @ means
        return np.sqrt(np.maximum(self._w @ (var + means**2) - mix**2, 0.0))

    def _export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        states, arrays = [], {}
        for k, m in enumerate(self._models):
            state, arr = m._export()
            states.append({"n_train": m.n_train_, **state})
            arrays.update({f"m{k}.{name}": v for name, v in arr.items()})
        return {"members": states}, arrays

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if len(state["members"]) != len(self._models):
            raise ValueError(f"saved ensemble has {len(state['members'])} members, parameters give "
                             f"{len(self._models)}")
        for k, (m, s) in enumerate(zip(self._models, state["members"])):
            prefix = f"m{k}."
            m._restore(s, {n[len(prefix):]: v for n, v in arrays.items() if n.startswith(prefix)})
        self.n_train_ = int(state["n_train"])
