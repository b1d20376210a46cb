"""Cost models: every objective of an architecture (latency on a device, MACs, FLOPs, parameters, model size) behind
one interface, so a search names them all the same way (``latency@snapdragon855``, ``macs``, ...).

A :class:`CostModel` prices single layers (:class:`~search_spaces.layers.LayerSpec`), caches those prices, and sums
them per architecture (OFA's additive model; see :mod:`hw_profiles.pricing` for the fast population path).
Each price carries its provenance: measured in a table, predicted by a model (with an error estimate), or exact.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw_profiles.pricing import BatchCost, LayerPrices, LayerwisePricer, OFAMobileNetV3Pricer, make_pricer
from search_spaces.base import SearchSpace
from search_spaces.layers import LayerSpec, layer_macs, layer_params

__all__ = ["CostModel", "LayerCost", "CostReport", "AnalyticCost"]


@dataclass(frozen=True)
class LayerCost:
    """One layer's price. ``source`` is ``table`` (measured), ``model`` (extrapolated) or ``exact`` (analytic)."""

    key: str
    value: float
    error: float
    source: str


@dataclass(frozen=True)
class CostReport:
    """An architecture's cost with its per-layer breakdown and the layers that were extrapolated by a model."""

    objective: str
    units: str
    value: float
    error: float
    layers: tuple[LayerCost, ...]

    @property
    def extrapolated(self) -> tuple[str, ...]:
        """Keys of the layers priced by the fallback model rather than measured."""
        return tuple(layer.key for layer in self.layers if layer.source == "model")

    def __str__(self) -> str:
        extra = f", {len(self.extrapolated)}/{len(self.layers)} layers extrapolated" if self.extrapolated else ""
        return f"{self.objective} = {self.value:.4g} +- {self.error:.2g} {self.units}{extra}"


class CostModel(abc.ABC):
    """Prices layers and architectures; subclasses define :meth:`_price` for a batch of new layers."""

    #: objective name, e.g. ``latency@snapdragon855`` or ``macs``
    name: str
    units: str
    #: how a layer not priced by a table is described in reports
    exact_source: str = "exact"
    #: cost added once per architecture (a runtime's per-call overhead), on top of the layer sum
    network_constant: float = 0.0

    def __init__(self) -> None:
        self._cache: dict[LayerSpec, tuple[float, float, float, bool]] = {}
        self._pricers: dict[SearchSpace, LayerwisePricer | OFAMobileNetV3Pricer] = {}

    @abc.abstractmethod
    def _price(self, specs: Sequence[LayerSpec]) -> LayerPrices:
        """Prices of ``specs`` (never zero for latency-like objectives)."""

    # -- layers -----------------------------------------------------------------------------------
    def price_layers(self, specs: Sequence[LayerSpec]) -> LayerPrices:
        """Vectorised, cached layer prices."""
        new = [s for s in dict.fromkeys(specs) if s not in self._cache]
        if new:
            p = self._price(new)
            for i, s in enumerate(new):
                self._cache[s] = (float(p.value[i]), float(p.sem2[i]), float(p.model_error[i]), bool(p.modelled[i]))
        rows = [self._cache[s] for s in specs]
        cols = list(zip(*rows)) if rows else [(), (), (), ()]
        return LayerPrices(np.array(cols[0], dtype=float), np.array(cols[1], dtype=float),
                           np.array(cols[2], dtype=float), np.array(cols[3], dtype=bool))

    def layer_cost(self, spec: LayerSpec) -> LayerCost:
        p = self.price_layers([spec])
        return self._layer_cost(spec, p, 0)

    def _layer_cost(self, spec: LayerSpec, p: LayerPrices, i: int) -> LayerCost:
        source = "model" if p.modelled[i] else self.exact_source
        return LayerCost(spec.key(), float(p.value[i]), float(np.sqrt(p.sem2[i]) + p.model_error[i]), source)

    # -- architectures ----------------------------------------------------------------------------
    def evaluate(self, space: SearchSpace, arch: Any) -> CostReport:
        """Detailed cost of one architecture (stem, blocks and head)."""
        specs = space.layers(arch)  # type: ignore[attr-defined]
        p = self.price_layers(specs)
        layers = tuple(self._layer_cost(s, p, i) for i, s in enumerate(specs))
        error = float(np.sqrt(p.sem2.sum()) + p.model_error.sum())
        return CostReport(self.name, self.units, float(p.value.sum()) + self.network_constant, error, layers)

    def pricer(self, space: SearchSpace) -> LayerwisePricer | OFAMobileNetV3Pricer:
        if space not in self._pricers:
            try:
                self._pricers[space] = make_pricer(space, self.price_layers)
            except KeyError:  # some layer of the space cannot be priced: only archs using it should fail
                self._pricers[space] = LayerwisePricer(space, self.price_layers)
        return self._pricers[space]

    def evaluate_many(self, space: SearchSpace, archs: Sequence[Any]) -> BatchCost:
        """Costs of a population of architectures (values, errors, number of extrapolated layers)."""
        return self._with_constant(self.pricer(space).price_archs(list(archs)))

    def evaluate_encoded(self, space: SearchSpace, x: np.ndarray) -> BatchCost:
        """Costs of encoded architectures (rows of ``space.encode``), e.g. a pymoo population matrix."""
        return self._with_constant(self.pricer(space).price_encoded(np.asarray(x)))

    def _with_constant(self, batch: BatchCost) -> BatchCost:
        if not self.network_constant:
            return batch
        return BatchCost(batch.values + self.network_constant, batch.errors, batch.n_modelled)

    def __call__(self, space: SearchSpace, archs: Sequence[Any]) -> np.ndarray:
        return self.evaluate_many(space, archs).values

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, units={self.units!r})"


class AnalyticCost(CostModel):
    """An exactly computable per-layer objective (MACs, FLOPs, parameters, model size)."""

    def __init__(self, name: str, units: str, fn: Callable[[LayerSpec], float]) -> None:
        super().__init__()
        self.name, self.units, self._fn = name, units, fn

    def _price(self, specs: Sequence[LayerSpec]) -> LayerPrices:
        z = np.zeros(len(specs))
        return LayerPrices(np.array([self._fn(s) for s in specs], dtype=float), z, z, z.astype(bool))


def macs_cost() -> AnalyticCost:
    return AnalyticCost("macs", "MAC", lambda s: float(layer_macs(s)))


def flops_cost() -> AnalyticCost:
    return AnalyticCost("flops", "FLOP", lambda s: 2.0 * layer_macs(s))


def params_cost() -> AnalyticCost:
    return AnalyticCost("params", "parameters", lambda s: float(layer_params(s)))


def size_cost() -> AnalyticCost:
    """Stored weight bytes in MB at each layer's bit-width."""
    return AnalyticCost("size", "MB", lambda s: layer_params(s) * s.bits / 8 / 1e6)
