"""Whole-population operations on integer encodings (rows of ``space.encode``), without building arch objects.

Searchers evaluate populations of hundreds of architectures per generation; per-architecture Python (decode,
validate, one-hot) would dominate the search time (OFA's evolution spends 92% of its time in one-at-a-time
efficiency-model calls). The only space-specific piece is the *active-gene mask* of each row; canonical encodings
(inactive genes zeroed, exactly what ``space.encode`` produces) and depth-masked one-hot features
(exactly ``space.onehot``) follow from it. Spaces without a registered vectorised mask fall back to per-row
``space.active(space.decode(x))``; spaces that never deactivate genes need nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from search_spaces.base import SearchSpace
from search_spaces.ofa_mbv3 import OFAMobileNetV3Space

__all__ = ["EncodedView", "ACTIVE_MASKS", "register_active_mask"]

ActiveMask = Callable[[Any, np.ndarray], np.ndarray]
#: vectorised ``active`` per space class (looked up along the MRO, so subclasses inherit it)
ACTIVE_MASKS: dict[type, ActiveMask] = {}


def register_active_mask(space_type: type) -> Callable[[ActiveMask], ActiveMask]:
    """Register ``fn(space, X) -> bool mask (n, n_genes)`` equal to ``space.active`` row by row."""

    def deco(fn: ActiveMask) -> ActiveMask:
        ACTIVE_MASKS[space_type] = fn
        return fn

    return deco


@register_active_mask(OFAMobileNetV3Space)
def _mbv3_active(space: OFAMobileNetV3Space, X: np.ndarray) -> np.ndarray:
    n_s, per = space.n_stages, space.max_depth
    nb = n_s * per
    depth = np.asarray(space.depths)[X[:, 2 * nb : 2 * nb + n_s]]  # (n, stages) depth values
    blocks = (np.arange(per)[None, None, :] < depth[:, :, None]).reshape(len(X), nb)
    return np.concatenate([blocks, blocks, np.ones((len(X), n_s + 1), dtype=bool)], axis=1)


class EncodedView:
    """Vectorised canonicalisation, one-hot features and decoding of encoding matrices of one space."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        genes = space.genes()
        self.sizes = np.array([len(g.choices) for g in genes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.n_genes = len(genes)
        self.n_features = int(self.sizes.sum())
        self._mask_fn = next((ACTIVE_MASKS[t] for t in type(space).__mro__ if t in ACTIVE_MASKS), None)
        self._always_active = type(space).active is SearchSpace.active

    def check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(np.rint(X), dtype=np.int64)
        if X.ndim != 2 or X.shape[1] != self.n_genes:
            raise ValueError(f"encodings of space {self.space.name!r} must be (n, {self.n_genes}), got {X.shape}")
        bad = (X < 0) | (X >= self.sizes)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"gene {self.space.genes()[c].name} index {X[r, c]} out of [0, {self.sizes[c] - 1}]")
        return X

    def active(self, X: np.ndarray) -> np.ndarray:
        if self._always_active:
            return np.ones(X.shape, dtype=bool)
        if self._mask_fn is not None:
            return self._mask_fn(self.space, X)
        return np.stack([self.space.active(self.space.decode(x)) for x in X]) if len(X) else np.ones(X.shape, bool)

    def canonical(self, X: np.ndarray) -> np.ndarray:
        """Inactive genes set to 0: equal rows if and only if equal architectures (same ``arch_id``)."""
        X = self.check(X)
        return np.where(self.active(X), X, 0)

    def onehot(self, X: np.ndarray) -> np.ndarray:
        """``space.onehot`` of every row (float32), computed in one scatter."""
        X = self.check(X)
        out = np.zeros((len(X), self.n_features), dtype=np.float32)
        rows = np.repeat(np.arange(len(X)), self.n_genes)
        out[rows, (X + self.offsets).reshape(-1)] = self.active(X).reshape(-1)
        return out

    def decode(self, X: np.ndarray) -> list[Any]:
        return [self.space.decode(x) for x in self.check(X)]

    def encode(self, archs: Sequence[Any]) -> np.ndarray:
        return self.space.encode_many(list(archs)).astype(np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform random encodings (canonicalised)."""
        return self.canonical(rng.integers(0, self.sizes, size=(n, self.n_genes)))

    def keys(self, Xc: np.ndarray) -> list[bytes]:
        """Hashable identity of canonical rows."""
        Xc = np.ascontiguousarray(Xc, dtype=np.int64)
        return [row.tobytes() for row in Xc]
