"""Vectorised additive costs (latency look-up tables, MACs, params) on encoding matrices.

OFA prices a subnet as the sum of per-layer entries of a latency table (stem + blocks + head, no interaction
term); so do nn-Meter's kernel predictors and HW-NAS-Bench's FBNet tables. For such costs the whole population can
be priced at once: every layer of an OFA-MobileNetV3 block depends only on its position, its kernel, its expand
ratio and the input resolution, so one table ``T[block, k, e, r]`` (filled from ``space.layers`` and any per-layer
cost, each distinct :class:`LayerSpec` priced once) gives ``cost(X) = fixed[r] + sum of active T entries``.
NAS-Bench-201's MACs and params are sums over the cell's edges of a per-operation cost, so
``cost(X) = cost(all 'none') + sum_e T[e, op_e]`` with ``T`` read off single-edge cells.
:func:`encoded_cost` returns the vectorised MACs/params of any space that has such a tabulation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nas.search.encoded import EncodedView
from search_spaces.layers import LayerSpec, layer_macs, layer_params
from search_spaces.nb201 import NB201Arch, NB201Space
from search_spaces.ofa_mbv3 import MBv3Arch, OFAMobileNetV3Space

__all__ = ["AdditiveCost", "mbv3_additive_cost", "nb201_additive_cost", "encoded_cost"]


class AdditiveCost:
    """``fixed[r] + sum_{active blocks} T[block, k, e, r]`` for encodings of an OFA-MobileNetV3 space."""

    def __init__(self, space: OFAMobileNetV3Space, fixed: np.ndarray, table: np.ndarray) -> None:
        self.space, self.fixed, self.table = space, fixed, table
        self.view = EncodedView(space)
        self._nb = space.n_stages * space.max_depth

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = self.view.check(X)
        nb = self._nb
        active = self.view.active(X)[:, :nb]
        r = X[:, -1]
        per_block = self.table[np.arange(nb)[None, :], X[:, :nb], X[:, nb : 2 * nb], r[:, None]]
        return self.fixed[r] + np.where(active, per_block, 0.0).sum(axis=1)


def mbv3_additive_cost(space: OFAMobileNetV3Space, layer_cost: Callable[[LayerSpec], float]) -> AdditiveCost:
    """Tabulate ``layer_cost`` over every (block, kernel, expand, resolution) of ``space``.

    Uses only ``space.layers`` of full-depth architectures: block (s, b) of a full-depth network is the same layer as
    in any network where it is active, because widths, strides and feature sizes depend on the position alone.
    """
    nb, ns, md = space.n_stages * space.max_depth, space.n_stages, space.max_depth
    cache: dict[LayerSpec, float] = {}

    def price(layer: LayerSpec) -> float:
        if layer not in cache:
            cache[layer] = float(layer_cost(layer))
        return cache[layer]

    table = np.zeros((nb, len(space.kernels), len(space.expands), len(space.resolutions)))
    fixed = np.zeros(len(space.resolutions))
    for ri, r in enumerate(space.resolutions):
        for ki, k in enumerate(space.kernels):
            for ei, e in enumerate(space.expands):
                arch = MBv3Arch(ks=(k,) * nb, e=(e,) * nb, d=(md,) * ns, r=r)
                layers = space.layers(arch)
                blocks = layers[2 : 2 + nb]
                table[:, ki, ei, ri] = [price(layer) for layer in blocks]
                fixed[ri] = sum(price(layer) for layer in layers[:2] + layers[2 + nb :])
    return AdditiveCost(space, fixed, table)


def nb201_additive_cost(space: NB201Space,
                        arch_cost: Callable[[NB201Arch], float]) -> Callable[[np.ndarray], np.ndarray]:
    """``arch_cost`` (e.g. ``space.macs``) as base + per-(edge, op) table; exact for NB201's edge-additive costs."""
    n_edges, none = len(space.genes()), "none"
    base_ops = [none] * n_edges
    base = float(arch_cost(NB201Arch(tuple(base_ops))))
    table = np.zeros((n_edges, len(space.ops)))
    for e in range(n_edges):
        for j, op in enumerate(space.ops):
            ops = list(base_ops)
            ops[e] = op
            table[e, j] = float(arch_cost(NB201Arch(tuple(ops)))) - base
    view = EncodedView(space)

    def cost(X: np.ndarray) -> np.ndarray:
        X = view.check(X)
        return base + table[np.arange(n_edges)[None, :], X].sum(axis=1)

    return cost


_ENCODED: dict[type, Callable[[Any, str], Callable[[np.ndarray], np.ndarray]]] = {
    OFAMobileNetV3Space: lambda space, kind: mbv3_additive_cost(
        space, {"macs": layer_macs, "params": layer_params}[kind]),
    NB201Space: lambda space, kind: nb201_additive_cost(space, getattr(space, kind)),
}


def encoded_cost(space: Any, kind: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """Vectorised ``space.macs``/``space.params`` on encodings, or None if the space has no tabulation."""
    if kind not in ("macs", "params"):
        raise ValueError(f"kind must be 'macs' or 'params', got {kind!r}")
    factory = next((_ENCODED[t] for t in type(space).__mro__ if t in _ENCODED), None)
    return None if factory is None or "none" not in getattr(space, "ops", ("none",)) else factory(space, kind)
