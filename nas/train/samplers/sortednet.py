"""SortedNet many-in-one training (Valipour et al., arXiv 2309.00255) as a sampler (registry name ``sortednet``).

Each step draws ``g_acc`` sub-models from a configurable distribution over a sorted grid of nested sub-models
(:mod:`search_spaces.sorted`): by default each grid dimension uniformly and independently (the paper's P_B), or
over the points of a sorted chain with given weights. The trainer runs the plan's tasks on the step's batch and
accumulates their gradients before one optimizer step, so the step minimises
``sum_{n in B} w_n L_n(x; theta_n)`` with ``w_n = 1/g_acc`` (SoFT's normalisation) or 1. Depth sub-models share
the supernet's final norm and head. ``always=("smallest",)`` (or ``"largest"``, or both) puts those ends of the
chain into every step and draws the other ``g_acc - len(always)`` sub-models, the sandwich rule's cure for the
smallest sub-model getting only ``g_acc / N`` of the updates. The RNG is the only state (saved in checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.data import Batch
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask
from nas.train.samplers.base import SAMPLERS, Sampler
from search_spaces import SearchSpace
from search_spaces.errors import BadInputError
from search_spaces.sorted import SortedGrid, sorted_grid

__all__ = ["SortedNetSampler", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("grid", "chain")


class SortedNetSampler(Sampler):
    """``g_acc`` nested sub-models per step from ``distribution`` over the sorted grid (or its chain)."""

    tags = ("sorted",)

    def __init__(self, space: SearchSpace, *, dims: Sequence[str] | None = None,
                 fixed: Mapping[str, Any] | None = None, g_acc: int = 4, distribution: str = "grid",
                 probs: Mapping[str, Sequence[float]] | None = None, chain_order: Sequence[str] | None = None,
                 chain_weights: Sequence[float] | None = None, always: Sequence[str] = (), normalize: bool = True,
                 label_smoothing: float = 0.0, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        if g_acc < 1:
            raise BadInputError(f"g_acc must be >= 1, got {g_acc}")
        if distribution not in DISTRIBUTIONS:
            raise BadInputError(f"distribution={distribution!r} not allowed; choose one of {list(DISTRIBUTIONS)}")
        kwargs: dict[str, Any] = {"fixed": fixed}
        if dims is not None:
            kwargs["dims"] = list(dims)
        self.grid: SortedGrid = sorted_grid(space, **kwargs)
        self.chain = self.grid.chain(chain_order)
        self.g_acc, self.distribution, self.probs = g_acc, distribution, dict(probs or {})
        self.chain_weights = self._chain_weights(chain_weights)
        ends = {"smallest": self.chain[0], "largest": self.chain[-1]}
        bad = [a for a in always if a not in ends]
        if bad or len(set(always)) != len(always) or len(always) > g_acc:
            raise BadInputError(f"always={list(always)}: give distinct values from {list(ends)}, at most g_acc={g_acc}")
        self.always = [ends[a] for a in always]
        self.grid.sample(np.random.default_rng(0), self.probs)  # validate probs now, not at the first step
        self.recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)
        self.weight = 1.0 / g_acc if normalize else 1.0

    def _chain_weights(self, weights: Sequence[float] | None) -> np.ndarray:
        n = len(self.chain)
        if weights is None:
            return np.full(n, 1.0 / n)
        w = np.asarray(weights, dtype=float)
        if w.shape != (n,) or np.any(w < 0) or w.sum() <= 0:
            raise BadInputError(f"chain_weights must be {n} non-negative numbers with a positive sum, got {weights}")
        return w / w.sum()

    def draw(self) -> tuple[int, ...]:
        """One grid point from the configured distribution (advances the RNG)."""
        if self.distribution == "chain":
            return self.chain[int(self.rng.choice(len(self.chain), p=self.chain_weights))]
        return self.grid.sample(self.rng, self.probs)

    def plan(self, step: int, batch: Batch) -> StepPlan:
        points = self.always + [self.draw() for _ in range(self.g_acc - len(self.always))]
        return StepPlan([SubnetTask(self.grid.arch(p), self.recipe, weight=self.weight, tag="sorted") for p in points])

    def chain_archs(self) -> list[Any]:
        """The sorted chain theta_1 subset ... subset theta_N as architectures."""
        return [self.grid.arch(i) for i in self.chain]


@SAMPLERS.register("sortednet")
def sortednet(**kwargs: Any) -> SortedNetSampler:
    """SortedNet many-in-one: ``g_acc`` nested sub-models per step from the sorted grid."""
    return SortedNetSampler(**kwargs)
