"""Pricing whole architectures from per-layer costs: OFA's additive model, fast for populations.

A network's cost is the sum of its layers' costs (stem, blocks and head; OFA's ``MBv3LatencyTable.predict_network``
and HW-NAS-Bench's FBNet LUT sum). One pricer serves every per-layer cost (MACs, parameters, bit-ops, size,
latency): :class:`TabulatedPricer` for spaces with the ``layer_table`` capability prices every layer the space can
produce once, then a whole population of encodings as one numpy gather per table slot; :class:`LayerwisePricer`
sums ``space.layers(arch)`` per architecture (cached) for spaces that only have ``layers``. Both give the same
numbers; :func:`make_pricer` picks by capability, never by the space's class or name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_spaces.base import InvalidArchError, SearchSpace, has_capability, require
from search_spaces.layers import LayerSpec

__all__ = ["LayerPrices", "BatchCost", "LayerwisePricer", "TabulatedPricer", "Pricer", "make_pricer",
           "space_layer_specs", "restrict_resolutions"]


@dataclass(frozen=True)
class LayerPrices:
    """Per-layer arrays: value, squared standard error of a measurement, model error, priced-by-model flag."""

    value: np.ndarray
    sem2: np.ndarray
    model_error: np.ndarray
    modelled: np.ndarray


PriceFn = Callable[[Sequence[LayerSpec]], LayerPrices]


@dataclass(frozen=True)
class BatchCost:
    """Costs of a population: ``values``, one-sigma ``errors`` and the number of model-priced layers per arch."""

    values: np.ndarray
    errors: np.ndarray
    n_modelled: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def _combine(sem2: np.ndarray, model_error: np.ndarray, axis: int = -1) -> np.ndarray:
    """Measurement errors are independent (add in quadrature); model errors correlate across layers (add up)."""
    return np.sqrt(sem2.sum(axis=axis)) + model_error.sum(axis=axis)


class LayerwisePricer:
    """Generic pricer: ``space.layers(arch)`` then a sum of cached layer prices."""

    def __init__(self, space: SearchSpace, price: PriceFn) -> None:
        self.space, self.price = space, price
        self._layers = require(space, "layers", needed_by="per-layer pricing (hardware profiles, MACs, params)")
        self._totals: dict[Any, tuple[float, float, int]] = {}

    def _one(self, arch: Any) -> tuple[float, float, int]:
        hit = self._totals.get(arch)
        if hit is None:
            p = self.price(self._layers(arch))
            hit = (float(p.value.sum()), float(_combine(p.sem2, p.model_error)), int(p.modelled.sum()))
            self._totals[arch] = hit
        return hit

    def price_archs(self, archs: Sequence[Any]) -> BatchCost:
        rows = np.array([self._one(a) for a in archs], dtype=float).reshape(-1, 3)
        return BatchCost(rows[:, 0], rows[:, 1], rows[:, 2].astype(int))

    def price_encoded(self, x: np.ndarray) -> BatchCost:
        return self.price_archs([self.space.decode(row) for row in np.atleast_2d(x)])


class TabulatedPricer:
    """Prices encodings of a space with a :class:`~search_spaces.layer_table.LayerTable` by gathers.

    Every distinct layer is priced once; each table entry holds the summed (value, sem^2, model error, modelled)
    of its layers, and all slots' entries sit in one array. A slot's entry index is linear in the gene indices
    (C-order strides), so a population costs one integer matrix product, one gather and one sum.
    """

    def __init__(self, space: SearchSpace, price: PriceFn) -> None:
        self.space = space
        table = require(space, "layer_table", needed_by="population pricing")()
        specs = table.specs()
        p = price(specs)
        rows = np.stack([getattr(p, f).astype(float) for f in ("value", "sem2", "model_error", "modelled")], axis=1)
        index = {spec: i for i, spec in enumerate(specs)}
        entries: list[np.ndarray] = []
        offsets: list[int] = []
        for slot in table.slots:
            offsets.append(sum(len(e) for e in entries))
            entries.append(np.stack([rows[[index[s] for s in entry]].sum(axis=0) for entry in slot.layers]))
        self.specs, self.slots = specs, table.slots
        self._table = np.concatenate(entries)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._highs = space.bounds()[1]
        self._strides = np.zeros((len(self._highs), len(table.slots)), dtype=np.int64)  # gene -> slot entry stride
        for j, slot in enumerate(table.slots):
            strides = np.cumprod((1,) + slot.sizes[:0:-1])[::-1]
            for g, st in zip(slot.genes, strides):
                self._strides[g, j] += st

    def price_archs(self, archs: Sequence[Any]) -> BatchCost:
        return self.price_encoded(self.space.encode_many(list(archs)))

    def price_encoded(self, x: np.ndarray) -> BatchCost:
        x = np.rint(np.atleast_2d(np.asarray(x, dtype=float))).astype(np.int64)
        if x.ndim != 2 or x.shape[1] != len(self._highs):
            raise InvalidArchError(f"encoded archs of space {self.space.name!r} must have shape "
                                   f"(n, {len(self._highs)}), got {x.shape}")
        if len(x) and (x.min() < 0 or np.any(x > self._highs)):
            raise InvalidArchError(f"gene index out of range; upper bounds (inclusive) are {self._highs.tolist()}")
        parts = self._table[x @ self._strides + self._offsets].sum(axis=1)
        return BatchCost(parts[:, 0], np.sqrt(parts[:, 1]) + parts[:, 2], np.rint(parts[:, 3]).astype(int))


Pricer = LayerwisePricer | TabulatedPricer


def make_pricer(space: SearchSpace, price: PriceFn) -> Pricer:
    """The tabulated pricer when the space has a ``layer_table``, else the per-architecture one (same numbers)."""
    return TabulatedPricer(space, price) if has_capability(space, "layer_table") else LayerwisePricer(space, price)


def restrict_resolutions(space: SearchSpace, resolutions: Sequence[int] | None) -> SearchSpace:
    """The same space with only ``resolutions`` (``None`` keeps the space as it is)."""
    if resolutions is None:
        return space
    fields: set[str] = {f.name for f in dataclasses.fields(space)} if dataclasses.is_dataclass(space) else set()
    if "resolutions" not in fields:
        raise ValueError(f"space {space.name!r} has no elastic resolutions to restrict")
    bad = sorted(set(resolutions) - set(space.resolutions))  # type: ignore[attr-defined]
    if bad:
        raise ValueError(f"resolutions {bad} are not in space {space.name!r}: "
                         f"{list(space.resolutions)}")  # type: ignore[attr-defined]
    return dataclasses.replace(space, resolutions=tuple(resolutions))  # type: ignore[type-var]


def space_layer_specs(space: SearchSpace, resolutions: Sequence[int] | None = None, *,
                      samples: int = 2000, seed: int = 0) -> list[LayerSpec]:
    """Every distinct layer a space can produce (exact with a ``layer_table``; sampled otherwise), sorted by key.

    ``resolutions`` restricts spaces with elastic resolution to a subset of them.
    """
    space = restrict_resolutions(space, resolutions)
    if has_capability(space, "layer_table"):
        return space.layer_table().specs()  # type: ignore[attr-defined]
    layers = require(space, "layers", needed_by="the profiler")
    rng = np.random.default_rng(seed)
    return sorted({spec for _ in range(samples) for spec in layers(space.sample(rng))}, key=LayerSpec.key)
