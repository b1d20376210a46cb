"""Additive layer tables: a space's layer list split into slots that each depend on a few genes. No torch.

OFA prices a subnet as the sum of per-layer latency-table entries (``MBv3LatencyTable.predict_network``) and
HW-NAS-Bench sums FBNet per-layer tables the same way. When every layer of a network depends on only a few genes
(an OFA block on the resolution, its stage's depth and its own kernel and expand ratio; an NB201 edge on its op),
the layer list is a union of *slots*: slot ``s`` reads genes ``genes[s]`` and holds, for every combination of their
choice indices (C order), the tuple of layers it contributes (empty when inactive). Any per-layer cost then prices a
whole population of encodings as one gather per slot (see :class:`hw_profiles.pricing.TabulatedPricer`).
A space offers this through its ``layer_table()`` capability and builds it from its own layer definition, so the
table and ``layers(arch)`` cannot disagree (the registry sweep in :mod:`nas.testing` checks it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from search_spaces.layers import LayerSpec

__all__ = ["TableSlot", "LayerTable"]


@dataclass(frozen=True)
class TableSlot:
    """Layers of one slot for every combination of its genes' choice indices (flattened in C order)."""

    name: str
    genes: tuple[int, ...]
    sizes: tuple[int, ...]
    layers: tuple[tuple[LayerSpec, ...], ...]

    def __post_init__(self) -> None:
        if len(self.genes) != len(self.sizes) or len(self.layers) != int(np.prod(self.sizes, dtype=np.int64)):
            raise ValueError(f"slot {self.name!r}: {len(self.layers)} entries for genes {self.genes} of sizes "
                             f"{self.sizes}; need one entry per combination")

    @classmethod
    def build(cls, name: str, genes: Sequence[int], sizes: Sequence[int],
              make: Callable[..., Sequence[LayerSpec]]) -> TableSlot:
        """``make(*choice_indices)`` for every combination of the genes' choice indices."""
        combos = itertools.product(*[range(n) for n in sizes])
        return cls(name, tuple(genes), tuple(sizes), tuple(tuple(make(*c)) for c in combos))

    def index(self, X: np.ndarray) -> np.ndarray:
        """Flat entry of each encoding row."""
        if not self.genes:
            return np.zeros(len(X), dtype=np.int64)
        return np.ravel_multi_index(tuple(X[:, g] for g in self.genes), self.sizes)


@dataclass(frozen=True)
class LayerTable:
    """The slots of a space; ``layers_of(x)`` is the layer multiset of one encoding."""

    slots: tuple[TableSlot, ...]

    def specs(self) -> list[LayerSpec]:
        """Every distinct layer the space can produce, sorted by signature."""
        return sorted({s for slot in self.slots for entry in slot.layers for s in entry}, key=LayerSpec.key)

    def layers_of(self, x: np.ndarray) -> list[LayerSpec]:
        row = np.asarray(x, dtype=np.int64)[None, :]
        return [s for slot in self.slots for s in slot.layers[int(slot.index(row)[0])]]
