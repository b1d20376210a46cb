"""Predictor features, taken only from the search space (never from a second copy of it).

* ``onehot``: the space's depth-masked one-hot (``space.onehot``; OFA's ``MobileNetArchEncoder`` layout).
* ``genes``: the integer genes of ``space.encode`` scaled to [0, 1] (ordinal view of the same choices).
* ``cost``: log MACs and log parameters from the space's own cost model (``space.macs`` / ``space.params``), the
  prior knowledge that accuracy grows with compute (ranking by MACs alone reaches Kendall tau ~0.8 on OFA-MBv3).
* ``layer_cost``: log MACs and log parameters per *segment* of the concrete network (``space.layers``): consecutive
  layers with the same output channels and no stride, i.e. the stages of a CNN. Where compute is spent matters as
  much as how much (nn-Meter prices kernels the same way, per layer signature).
* ``slot_cost``: log MACs of each layer slot (segment, position in the segment): where inside a stage the compute
  sits, and how a block's kernel and expansion combine.

Featurizers are registered in :data:`FEATURES`; ``"auto"`` takes ``cost``, ``layer_cost``, ``slot_cost`` and
``onehot`` where the space supports them, so a joint architecture x quantisation space gets its quantisation genes
through ``onehot`` and its bit-aware cost through ``space.macs`` without any code here knowing about either.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import numpy as np

from search_spaces import LayerSpec, SearchSpace
from search_spaces.layers import layer_macs, layer_params
from search_spaces.registry import Registry

__all__ = ["Featurizer", "FEATURES", "FeatureEncoder", "FeatureUnavailableError", "resolve_features"]


class FeatureUnavailableError(ValueError):
    """A featurizer was requested for a space that cannot provide it."""


class Featurizer(abc.ABC):
    """Maps a batch of architectures to a ``(n, d)`` float array. ``binary`` features are not standardised."""

    binary: ClassVar[bool] = False

    def __init__(self, space: SearchSpace) -> None:
        reason = self.unavailable(space)
        if reason:
            raise FeatureUnavailableError(f"feature {type(self).__name__} is unavailable for space {space.name!r}: "
                                          f"{reason}")
        self.space = space

    @classmethod
    def unavailable(cls, space: SearchSpace) -> str | None:
        """Why this featurizer cannot serve ``space`` (``None`` when it can)."""
        return None

    @abc.abstractmethod
    def __call__(self, archs: Sequence[Any]) -> np.ndarray: ...


FEATURES: Registry[Featurizer] = Registry("predictor feature")


@FEATURES.register("onehot")
class OneHot(Featurizer):
    binary = True

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        return self.space.onehot_many(list(archs)).astype(np.float64)


@FEATURES.register("genes")
class Genes(Featurizer):
    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        hi = np.maximum(self.space.bounds()[1], 1).astype(np.float64)
        return self.space.encode_many(list(archs)) / hi


def _has(space: SearchSpace, method: str) -> bool:
    return callable(getattr(space, method, None))


@FEATURES.register("cost")
class Cost(Featurizer):
    @classmethod
    def unavailable(cls, space: SearchSpace) -> str | None:
        return None if _has(space, "macs") or _has(space, "params") else "the space defines neither macs() nor params()"

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        fns = [getattr(self.space, m) for m in ("macs", "params") if _has(self.space, m)]
        return np.log1p(np.array([[float(f(a)) for f in fns] for a in archs], dtype=np.float64).reshape(len(archs), -1))


def segments(layers: Sequence[LayerSpec]) -> list[int]:
    """Segment index of each layer: a new segment starts when the output channels change or a layer strides."""
    out, seg, prev = [], -1, None
    for layer in layers:
        if prev is None or layer.out_c != prev or layer.stride > 1:
            seg += 1
        out.append(seg)
        prev = layer.out_c
    return out


@FEATURES.register("layer_cost")
class LayerCost(Featurizer):
    """Per-segment log1p MACs and params; the segment count is the largest network's (``space.max_arch()``)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        self.n_segments = max(len(set(segments(self._layers(a)))) for a in (space.min_arch(), space.max_arch()))

    @classmethod
    def unavailable(cls, space: SearchSpace) -> str | None:
        return None if _has(space, "layers") else "the space does not describe its layers (no layers() method)"

    def _layers(self, arch: Any) -> list[LayerSpec]:
        layers: Any = self.space.layers  # type: ignore[attr-defined]  # optional; checked by unavailable()
        return list(layers(arch))

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        out = np.zeros((len(archs), 2 * self.n_segments))
        for i, arch in enumerate(archs):
            layers = self._layers(arch)
            for layer, seg in zip(layers, segments(layers)):
                s = min(seg, self.n_segments - 1)  # a network with extra segments folds them into the last one
                out[i, 2 * s] += layer_macs(layer)
                out[i, 2 * s + 1] += layer_params(layer)
        return np.log1p(out)


@FEATURES.register("slot_cost")
class SlotCost(LayerCost):
    """log1p MACs of each layer *slot*: (segment, position within the segment), slots of the largest network.

    Finer than ``layer_cost``: where in a stage the compute sits (the first, strided block of a stage or a later
    residual one) and how a block's kernel and expansion combine (MACs of a block ~ expand x (1 + kernel^2 / c)).
    An inactive slot (a block beyond the stage's depth) is 0.
    """

    def __init__(self, space: SearchSpace) -> None:
        Featurizer.__init__(self, space)
        counts: dict[int, int] = {}
        for arch in (space.min_arch(), space.max_arch()):
            for seg, n in self._counts(self._layers(arch)).items():
                counts[seg] = max(counts.get(seg, 0), n)
        self.offsets = {seg: int(sum(counts[s] for s in sorted(counts) if s < seg)) for seg in counts}
        self.width = int(sum(counts.values()))

    @staticmethod
    def _counts(layers: Sequence[LayerSpec]) -> dict[int, int]:
        out: dict[int, int] = {}
        for seg in segments(layers):
            out[seg] = out.get(seg, 0) + 1
        return out

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        out = np.zeros((len(archs), self.width))
        for i, arch in enumerate(archs):
            layers = self._layers(arch)
            pos: dict[int, int] = {}
            for layer, seg in zip(layers, segments(layers)):
                j = pos.get(seg, 0)
                pos[seg] = j + 1
                col = self.offsets.get(seg, self.width) + j
                if col < self.width:  # layers beyond the largest network's slots are dropped
                    out[i, col] += layer_macs(layer)
        return np.log1p(out)


AUTO = ("cost", "layer_cost", "slot_cost", "onehot")

# Feature rows are pure functions of (featurizer, space, arch); searches and benchmarks ask for the same
# architectures again and again, so recent rows are memoised (bounded, oldest evicted first).
_CACHE: OrderedDict[tuple[Hashable, ...], np.ndarray] = OrderedDict()
_CACHE_SIZE = 200_000


def _cached(part: Featurizer, archs: Sequence[Any]) -> np.ndarray:
    if len(archs) > _CACHE_SIZE // 2:
        return part(archs)
    keys = [(type(part).__name__, part.space, a) for a in archs]
    missing = list(dict.fromkeys(k for k in keys if k not in _CACHE))
    if missing:
        for k, row in zip(missing, part([k[2] for k in missing])):
            _CACHE[k] = row
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return np.stack([_CACHE[k] for k in keys]) if keys else part(archs)


def resolve_features(space: SearchSpace, features: str | Sequence[str]) -> tuple[str, ...]:
    """``"auto"`` -> the available ones of :data:`AUTO`; a name or list -> itself (checked against FEATURES)."""
    if features == "auto":
        return tuple(n for n in AUTO if FEATURES.get(n).unavailable(space) is None)  # type: ignore[attr-defined]
    names = (features,) if isinstance(features, str) else tuple(features)
    if not names:
        raise ValueError(f"features must name at least one of {FEATURES.names()} or be 'auto'")
    for n in names:
        FEATURES.get(n)  # unknown names raise with close matches
    return names


class FeatureEncoder:
    """Concatenates featurizers and standardises the non-binary columns with statistics of the training set."""

    def __init__(self, space: SearchSpace, features: str | Sequence[str] = "auto") -> None:
        self.space = space
        self.names = resolve_features(space, features)
        self.parts = [FEATURES.create(n, space=space) for n in self.names]
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self._binary: np.ndarray | None = None

    def raw(self, archs: Sequence[Any]) -> np.ndarray:
        return np.hstack([_cached(p, archs) for p in self.parts])

    def binary_mask(self) -> np.ndarray:
        """Which columns are binary (one-hot); the others are standardised continuous features."""
        if self._binary is None:
            probe = [self.space.min_arch()]
            self._binary = np.concatenate([np.full(p(probe).shape[1], p.binary) for p in self.parts])
        return self._binary

    def fit(self, archs: Sequence[Any]) -> np.ndarray:
        """Learn the standardisation on ``archs`` and return their features."""
        raw = self.raw(archs)
        binary = self.binary_mask()
        sd = raw.std(0)
        self.mean = np.where(binary, 0.0, raw.mean(0))
        self.std = np.where(binary | (sd < 1e-12), 1.0, sd)
        return (raw - self.mean) / self.std

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise RuntimeError("FeatureEncoder.fit must run before transforming")
        return (self.raw(archs) - self.mean) / self.std

    def arrays(self) -> dict[str, np.ndarray]:
        if self.mean is None or self.std is None:
            raise RuntimeError("FeatureEncoder.fit must run before saving")
        return {"features.mean": self.mean, "features.std": self.std}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        mean, std = arrays["features.mean"], arrays["features.std"]
        width = len(self.binary_mask())
        if mean.shape != (width,):
            raise ValueError(f"saved features have {mean.shape[0]} columns, features {list(self.names)} of space "
                             f"{self.space.name!r} give {width}")
        self.mean, self.std = mean, std
