"""SortedNet's nested sub-model grid and search-free selection (Valipour et al., arXiv 2309.00255).

A *sorted grid* spans a few nested dimensions of a space (depth = first ``d`` blocks; width = first channels,
heads or hidden units). Every dimension lists its levels from small to large, and a grid point sets each
dimension to one level (uniformly across blocks), so grid point ``a`` is a sub-model of ``b`` (theta_a subset
theta_b, as weights are prefix slices) whenever ``a <= b`` component-wise. A *sorted chain* is a path through
the grid from the smallest to the largest point that raises one dimension per step: theta_1 subset ... subset
theta_N.

After many-in-one training, deployment needs no search: :class:`SortedChain` measures the chain's costs once
(MACs, parameters, or latency from a hardware profile) and :meth:`SortedChain.select` returns the largest
sub-model within a budget. Grids are built per space type through the ``SORTED_GRIDS`` registry (keyed by the
space's class name), so a user's space plugs in by registering a builder. No torch here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_spaces.base import SearchSpace, as_generator
from search_spaces.ofa_mbv3 import MBv3Arch, OFAMobileNetV3Space
from search_spaces.registry import Registry
from search_spaces.vit import ViTArch, ViTSpace

__all__ = ["SortedDim", "SortedGrid", "SortedChain", "Selection", "SORTED_GRIDS", "sorted_grid", "chain_costs"]

Index = tuple[int, ...]


@dataclass(frozen=True)
class SortedDim:
    """One nested dimension: its name and its levels, smallest first."""

    name: str
    levels: tuple[Any, ...]


class SortedGrid:
    """Grid of nested sub-models of ``space``; ``build(values)`` maps ``{dim name: level value}`` to an arch."""

    def __init__(self, space: SearchSpace, dims: Sequence[SortedDim],
                 build: Callable[[Mapping[str, Any]], Any]) -> None:
        if not dims:
            raise ValueError("a sorted grid needs at least one dimension")
        self.space, self.dims, self._build = space, tuple(dims), build
        self.names = tuple(d.name for d in self.dims)

    @property
    def shape(self) -> Index:
        return tuple(len(d.levels) for d in self.dims)

    def __len__(self) -> int:
        return int(np.prod(self.shape))

    def _check(self, index: Sequence[int]) -> Index:
        idx = tuple(int(i) for i in index)
        if len(idx) != len(self.dims) or any(not 0 <= i < n for i, n in zip(idx, self.shape)):
            raise IndexError(f"grid index {idx} outside grid of shape {self.shape} (dims {list(self.names)})")
        return idx

    def arch(self, index: Sequence[int]) -> Any:
        idx = self._check(index)
        values = {d.name: d.levels[i] for d, i in zip(self.dims, idx)}
        return self.space.validate(self._build(values))

    def points(self) -> list[Index]:
        return list(itertools.product(*[range(n) for n in self.shape]))

    @staticmethod
    def nested(a: Sequence[int], b: Sequence[int]) -> bool:
        """Whether grid point ``a`` is a sub-model of ``b`` (component-wise ``<=``)."""
        return all(i <= j for i, j in zip(a, b))

    def chain(self, order: Sequence[str] | None = None) -> list[Index]:
        """Smallest to largest point, raising dimensions round-robin in ``order`` (default: grid order)."""
        order = list(self.names if order is None else order)
        unknown = sorted(set(order) - set(self.names))
        if unknown or not order:
            raise ValueError(f"chain order {order} must name grid dims {list(self.names)}")
        pos = [self.names.index(n) for n in order]
        cur, out = [0] * len(self.dims), [tuple([0] * len(self.dims))]
        while any(cur[p] < self.shape[p] - 1 for p in pos):
            for p in pos:
                if cur[p] < self.shape[p] - 1:
                    cur[p] += 1
                    out.append(tuple(cur))
        return out

    def sample(self, rng: np.random.Generator | int | None,
               probs: Mapping[str, Sequence[float]] | None = None) -> Index:
        """A grid point with each dimension drawn independently (uniform unless ``probs[dim]`` is given)."""
        rng = as_generator(rng)
        probs = dict(probs or {})
        unknown = sorted(set(probs) - set(self.names))
        if unknown:
            raise ValueError(f"probabilities given for unknown dims {unknown}; grid dims are {list(self.names)}")
        out = []
        for d in self.dims:
            p, n = probs.get(d.name), len(d.levels)
            out.append(int(rng.integers(n)) if p is None else int(rng.choice(n, p=_simplex(d.name, p, n))))
        return tuple(out)


def _simplex(name: str, p: Sequence[float], n: int) -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    if arr.shape != (n,) or np.any(arr < 0) or arr.sum() <= 0:
        raise ValueError(f"probabilities of {name!r} must be {n} non-negative numbers with a positive sum, got {p}")
    return arr / arr.sum()


# -- grids of the built-in spaces -------------------------------------------------------------------
SORTED_GRIDS: Registry[SortedGrid] = Registry("sorted grid (by space class name)")


def _pick(space_dims: Mapping[str, tuple[Any, ...]], dims: Sequence[str] | None,
          fixed: Mapping[str, Any]) -> tuple[list[SortedDim], dict[str, Any]]:
    names = list(space_dims) if dims is None else list(dims)
    unknown = sorted((set(names) | set(fixed)) - set(space_dims))
    if unknown:
        raise ValueError(f"unknown sorted dims {unknown}; choose from {list(space_dims)}")
    if set(names) & set(fixed):
        raise ValueError(f"dims {sorted(set(names) & set(fixed))} are both elastic and fixed")
    constant = {n: fixed.get(n, levels[-1]) for n, levels in space_dims.items() if n not in names}
    for n, v in constant.items():
        if v not in space_dims[n]:
            raise ValueError(f"fixed {n}={v!r} is not a choice; allowed: {list(space_dims[n])}")
    return [SortedDim(n, space_dims[n]) for n in names], constant


@SORTED_GRIDS.register("ViTSpace")
def vit_grid(space: ViTSpace, dims: Sequence[str] | None = None, fixed: Mapping[str, Any] | None = None) -> SortedGrid:
    """Dims ``depth``, ``embed``, ``heads``, ``mlp`` (each uniform across blocks); others fixed (default: max)."""
    space_dims = {"depth": space.depths, "embed": space.embed_dims, "heads": space.heads, "mlp": space.mlp_ratios}
    grid_dims, constant = _pick(space_dims, dims, dict(fixed or {}))
    n = space.max_depth

    def build(v: Mapping[str, Any]) -> ViTArch:
        v = {**constant, **v}
        return ViTArch(embed=v["embed"], depth=v["depth"], heads=(v["heads"],) * n, mlp=(v["mlp"],) * n)

    return SortedGrid(space, grid_dims, build)


@SORTED_GRIDS.register("OFAMobileNetV3Space")
def mbv3_grid(space: OFAMobileNetV3Space, dims: Sequence[str] | None = ("depth", "expand"),
              fixed: Mapping[str, Any] | None = None) -> SortedGrid:
    """Dims ``depth`` (every stage), ``expand`` (every block), ``kernel``, ``r``; defaults: depth x expand.

    Depth and expand are prefix-nested. A smaller kernel is the centre crop of the larger one, passed through
    OFA's transform matrices when the supernet has them, so ``kernel`` is nested only without transforms.
    """
    space_dims = {"depth": space.depths, "expand": space.expands, "kernel": space.kernels, "r": space.resolutions}
    grid_dims, constant = _pick(space_dims, dims, dict(fixed or {}))
    nb, ns = space.max_depth * space.n_stages, space.n_stages

    def build(v: Mapping[str, Any]) -> MBv3Arch:
        v = {**constant, **v}
        return MBv3Arch(ks=(v["kernel"],) * nb, e=(v["expand"],) * nb, d=(v["depth"],) * ns, r=v["r"])

    return SortedGrid(space, grid_dims, build)


def sorted_grid(space: SearchSpace, **kwargs: Any) -> SortedGrid:
    """The registered sorted grid of ``space``'s type (``sorted_grid(space, dims=["depth", "embed"])``)."""
    return SORTED_GRIDS.get(type(space).__name__)(space, **kwargs)


# -- search-free selection --------------------------------------------------------------------------
COST_METRICS: dict[str, Callable[[SearchSpace, Sequence[Any]], np.ndarray]] = {
    "macs": lambda sp, archs: np.array([sp.macs(a) for a in archs], dtype=float),  # type: ignore[attr-defined]
    "params": lambda sp, archs: np.array([sp.params(a) for a in archs], dtype=float),  # type: ignore[attr-defined]
}


def chain_costs(space: SearchSpace, archs: Sequence[Any], cost: Any) -> tuple[np.ndarray, str]:
    """Costs of ``archs`` and the metric's name.

    ``cost`` is ``"macs"``, ``"params"``, an object with ``latency(archs)`` (a hardware profile), or a callable
    ``cost(space, archs) -> array`` (e.g. a :mod:`hw_profiles` cost model).
    """
    if isinstance(cost, str):
        if cost not in COST_METRICS:
            raise ValueError(f"unknown cost metric {cost!r}; use one of {sorted(COST_METRICS)}, an object with "
                             "latency(archs), or a callable (space, archs) -> costs")
        return COST_METRICS[cost](space, archs), cost
    if callable(getattr(cost, "latency", None)):
        return np.asarray(cost.latency(list(archs)), dtype=float), "latency"
    if callable(cost):
        return np.asarray(cost(space, list(archs)), dtype=float), str(getattr(cost, "name", "cost"))
    raise TypeError(f"cost must be 'macs', 'params', an object with latency(archs) or a callable; got {cost!r}")


@dataclass(frozen=True)
class Selection:
    index: int
    arch: Any
    cost: float
    accuracy: float | None


@dataclass
class SortedChain:
    """A sorted chain with its costs measured once (and optionally measured accuracies)."""

    archs: list[Any]
    costs: np.ndarray
    metric: str
    accuracy: np.ndarray | None = None

    @classmethod
    def measure(cls, space: SearchSpace, archs: Sequence[Any], cost: Any = "macs",
                accuracy: Sequence[float] | None = None) -> SortedChain:
        costs, metric = chain_costs(space, archs, cost)
        acc = None if accuracy is None else np.asarray(accuracy, dtype=float)
        if acc is not None and acc.shape != costs.shape:
            raise ValueError(f"{len(acc)} accuracies for a chain of {len(costs)} sub-models")
        return cls(list(archs), costs, metric, acc)

    def select(self, budget: float, *, by: str = "size") -> Selection:
        """Largest sub-model (``by="size"``) or best measured one (``by="accuracy"``) with cost <= ``budget``."""
        feasible = np.flatnonzero(self.costs <= budget)
        if feasible.size == 0:
            raise ValueError(f"no sub-model fits {self.metric} <= {budget}; the smallest costs {self.costs.min()}")
        if by == "size":
            i = int(feasible[-1])
        elif by == "accuracy":
            if self.accuracy is None:
                raise ValueError("by='accuracy' needs measured accuracies (SortedChain.measure(..., accuracy=))")
            i = int(feasible[np.argmax(self.accuracy[feasible])])
        else:
            raise ValueError(f"by={by!r} not allowed; choose 'size' or 'accuracy'")
        acc = None if self.accuracy is None else float(self.accuracy[i])
        return Selection(i, self.archs[i], float(self.costs[i]), acc)

    def monotone_fraction(self) -> float:
        """Share of adjacent pairs whose accuracy does not decrease along the chain."""
        if self.accuracy is None or len(self.accuracy) < 2:
            raise ValueError("monotonicity needs measured accuracies of at least two sub-models")
        return float(np.mean(np.diff(self.accuracy) >= 0))
