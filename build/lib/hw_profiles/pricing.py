"""Pricing whole architectures from per-layer costs: OFA's additive model, fast for populations.

A network's cost is the sum of its layers' costs (stem, blocks and head; OFA's ``MBv3LatencyTable.predict_network``
and HW-NAS-Bench's FBNet LUT sum). :class:`LayerwisePricer` does this for any space with ``layers(arch)``.
Evolutionary search prices hundreds of thousands of architectures, and building ``LayerSpec`` lists per
architecture in Python is the bottleneck, so spaces whose layers depend only on (resolution, block slot, block
choices) get a tabulated pricer: :class:`OFAMobileNetV3Pricer` prices every possible layer once, then evaluates a
whole population as numpy gathers over the encoded architectures. Pricers are chosen through the ``PRICERS``
registry keyed by the space's class name.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_spaces.base import InvalidArchError, SearchSpace
from search_spaces.layers import LayerSpec
from search_spaces.ofa_mbv3 import MBv3Arch, OFAMobileNetV3Space
from search_spaces.registry import Registry

__all__ = ["LayerPrices", "BatchCost", "LayerwisePricer", "OFAMobileNetV3Pricer", "PRICERS", "make_pricer",
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
        if not hasattr(space, "layers"):
            raise TypeError(f"space {space.name!r} ({type(space).__name__}) has no layers(arch); it cannot be priced "
                            "per layer")
        self.space, self.price = space, price
        self._totals: dict[Any, tuple[float, float, int]] = {}

    def _one(self, arch: Any) -> tuple[float, float, int]:
        hit = self._totals.get(arch)
        if hit is None:
            p = self.price(self.space.layers(arch))  # type: ignore[attr-defined]
            hit = (float(p.value.sum()), float(_combine(p.sem2, p.model_error)), int(p.modelled.sum()))
            self._totals[arch] = hit
        return hit

    def price_archs(self, archs: Sequence[Any]) -> BatchCost:
        rows = np.array([self._one(a) for a in archs], dtype=float).reshape(-1, 3)
        return BatchCost(rows[:, 0], rows[:, 1], rows[:, 2].astype(int))

    def price_encoded(self, x: np.ndarray) -> BatchCost:
        return self.price_archs([self.space.decode(row) for row in np.atleast_2d(x)])


class OFAMobileNetV3Pricer:
    """Tabulated pricer of an :class:`OFAMobileNetV3Space`: one table per (resolution, block slot, kernel, expand).

    In this space a block's layer depends only on the resolution, its slot (stage and position) and its own kernel
    and expand ratio, and the stem, fixed first block and head depend only on the resolution. The tables are filled
    from ``space.layers`` of template architectures (all blocks equal, full depth), so the space stays the single
    definition of its layers.
    """

    def __init__(self, space: OFAMobileNetV3Space, price: PriceFn) -> None:
        self.space = space
        s, per = space.n_stages, space.max_depth
        self.nb, self.n_stages, self.per = s * per, s, per
        shape = (len(space.resolutions), self.nb, len(space.kernels), len(space.expands))
        self._slot_specs: dict[tuple[int, int, int, int], LayerSpec] = {}
        self._fixed_specs: dict[int, list[LayerSpec]] = {}
        for ri, r in enumerate(space.resolutions):
            for ki, ei in itertools.product(range(shape[2]), range(shape[3])):
                self._add_template(ri, r, ki, ei)
        specs = sorted(set(self._slot_specs.values()) | {x for v in self._fixed_specs.values() for x in v},
                       key=LayerSpec.key)
        p = price(specs)
        index = {spec: i for i, spec in enumerate(specs)}
        self.specs = specs
        slot_idx = np.zeros(shape, dtype=np.int64)
        for (ri, b, ki, ei), spec in self._slot_specs.items():
            slot_idx[ri, b, ki, ei] = index[spec]
        fixed_idx = [[index[x] for x in self._fixed_specs[ri]] for ri in range(shape[0])]
        cols = [getattr(p, name).astype(float) for name in ("value", "sem2", "model_error", "modelled")]
        stacked = np.stack(cols, axis=1)  # (n_specs, 4)
        self._table = stacked[slot_idx.reshape(-1)]  # flat (resolution, slot, kernel, expand) -> 4 columns
        self._fixed_sum = np.stack([stacked[ix].sum(axis=0) for ix in fixed_idx])
        self._kidx = {k: i for i, k in enumerate(space.kernels)}
        self._eidx = {e: i for i, e in enumerate(space.expands)}
        self._didx = {d: i for i, d in enumerate(space.depths)}
        self._ridx = {r: i for i, r in enumerate(space.resolutions)}
        self._depths = np.asarray(space.depths)

    def _add_template(self, ri: int, r: int, ki: int, ei: int) -> None:
        sp = self.space
        arch = MBv3Arch(ks=(sp.kernels[ki],) * self.nb, e=(sp.expands[ei],) * self.nb, d=(self.per,) * self.n_stages,
                        r=r)
        layers = sp.layers(arch)
        n_fixed = len(layers) - self.nb
        head = n_fixed - 4  # stem (+ fixed first block) before the blocks, 4 head layers after
        fixed = layers[:head] + layers[head + self.nb:]
        if ri in self._fixed_specs and self._fixed_specs[ri] != fixed:
            raise ValueError(f"space {sp.name!r}: fixed layers change with block choices; use LayerwisePricer")
        self._fixed_specs[ri] = fixed
        for b, spec in enumerate(layers[head:head + self.nb]):
            self._slot_specs[(ri, b, ki, ei)] = spec

    def encode(self, archs: Sequence[MBv3Arch]) -> np.ndarray:
        """Gene indices of ``archs`` (the space's encoding), without per-gene Python validation overhead."""
        kidx, eidx, didx, ridx = self._kidx, self._eidx, self._didx, self._ridx
        rows = []
        for a in archs:
            try:
                if len(a.ks) != self.nb or len(a.d) != self.n_stages:
                    raise KeyError(len(a.ks))
                rows.append([0 if k is None else kidx[k] for k in a.ks] + [0 if e is None else eidx[e] for e in a.e]
                            + [didx[d] for d in a.d] + [ridx[a.r]])
            except (KeyError, TypeError, AttributeError):
                self.space.validate(a)  # raises the descriptive InvalidArchError
                raise InvalidArchError(f"cannot encode {a!r} in space {self.space.name!r}") from None
        return np.array(rows, dtype=np.int64).reshape(len(rows), 2 * self.nb + self.n_stages + 1)

    def price_archs(self, archs: Sequence[MBv3Arch]) -> BatchCost:
        return self.price_encoded(self.encode(archs))

    def price_encoded(self, x: np.ndarray) -> BatchCost:
        x = np.rint(np.atleast_2d(np.asarray(x, dtype=float))).astype(np.int64)
        nb, n = self.nb, len(x)
        expected = 2 * nb + self.n_stages + 1
        if x.ndim != 2 or x.shape[1] != expected:
            raise InvalidArchError(f"encoded archs must have shape (n, {expected}), got {x.shape}")
        highs = [len(self.space.kernels)] * nb + [len(self.space.expands)] * nb
        highs += [len(self.space.depths)] * self.n_stages + [len(self.space.resolutions)]
        if n and (x.min() < 0 or np.any(x >= np.asarray(highs))):
            raise InvalidArchError(f"gene index out of range; upper bounds (exclusive) are {highs}")
        depth = self._depths[x[:, 2 * nb: 2 * nb + self.n_stages]]
        active = (np.arange(nb) % self.per)[None, :] < np.repeat(depth, self.per, axis=1)
        r = x[:, -1]
        n_k, n_e = len(self.space.kernels), len(self.space.expands)
        flat = ((r[:, None] * nb + np.arange(nb)[None, :]) * n_k + x[:, :nb]) * n_e + x[:, nb: 2 * nb]
        parts = np.einsum("nbc,nb->nc", self._table[flat], active.astype(float)) + self._fixed_sum[r]
        return BatchCost(parts[:, 0], np.sqrt(parts[:, 1]) + parts[:, 2], np.rint(parts[:, 3]).astype(int))



PRICERS: Registry[Any] = Registry("tabulated pricer")
PRICERS.add("OFAMobileNetV3Space", OFAMobileNetV3Pricer)


def make_pricer(space: SearchSpace, price: PriceFn) -> LayerwisePricer | OFAMobileNetV3Pricer:
    """The tabulated pricer registered for the space's exact class, else the generic layer-wise one."""
    name = type(space).__name__
    return PRICERS.get(name)(space, price) if name in PRICERS else LayerwisePricer(space, price)


def restrict_resolutions(space: SearchSpace, resolutions: Sequence[int] | None) -> SearchSpace:
    """The same OFA-style space with only ``resolutions`` (``None`` keeps the space as it is)."""
    if resolutions is None:
        return space
    if not isinstance(space, OFAMobileNetV3Space):
        raise ValueError(f"a resolution subset is supported for OFA-style spaces, not {type(space).__name__}")
    bad = sorted(set(resolutions) - set(space.resolutions))
    if bad:
        raise ValueError(f"resolutions {bad} are not in space {space.name!r}: {list(space.resolutions)}")
    return type(space)(**{**_fields(space), "resolutions": tuple(resolutions)})


def space_layer_specs(space: SearchSpace, resolutions: Sequence[int] | None = None, *,
                      samples: int = 2000, seed: int = 0) -> list[LayerSpec]:
    """Every distinct layer a space can produce (exact for tabulated spaces; sampled otherwise), sorted by key.

    ``resolutions`` restricts OFA-style spaces to a subset of their resolutions.
    """
    space = restrict_resolutions(space, resolutions)
    if type(space).__name__ in PRICERS:
        collected: list[LayerSpec] = []
        make_pricer(space, lambda specs: _collect(specs, collected))
        return sorted(set(collected), key=LayerSpec.key)
    rng = np.random.default_rng(seed)
    seen = {spec for _ in range(samples) for spec in space.layers(space.sample(rng))}  # type: ignore[attr-defined]
    return sorted(seen, key=LayerSpec.key)


def _fields(space: OFAMobileNetV3Space) -> dict[str, Any]:
    return {f.name: getattr(space, f.name) for f in dataclasses.fields(space) if f.init}


def _collect(specs: Sequence[LayerSpec], sink: list[LayerSpec]) -> LayerPrices:
    sink.extend(specs)
    z = np.zeros(len(specs))
    return LayerPrices(z + 1.0, z, z, z.astype(bool))
