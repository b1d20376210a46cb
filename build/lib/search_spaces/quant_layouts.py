"""Quantisable-layer layouts: which conv/linear *slots* a space's networks have, in forward order. No torch.

A policy (see :mod:`search_spaces.quant`) assigns bits per slot. A layout names the slots of the largest network
of a space, tells which slots run for a given architecture (``active``), prices each running slot
(:class:`SlotCost`: quantised weights, MACs, activation elements entering the layer, output channels) for model
size and average-bit objectives, and counts joint architectures in closed form. The slot order is the order in
which the network calls its convs / linears, which is also how a quantised supernet binds policies to layers.

Layouts exist for OFA-MobileNetV3 and NAS-Bench-201 spaces; any other space plugs in by defining a
``quant_layout()`` method, by :func:`register_layout`, or with a :class:`FixedLayout` for a static network.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_spaces.layers import LayerSpec
from search_spaces.nb201 import NB201_EDGES, NB201Space
from search_spaces.ofa_mbv3 import OFAMobileNetV3Space

__all__ = ["SlotCost", "QuantLayout", "FixedLayout", "MBv3Layout", "NB201Layout", "register_layout", "layout_for"]


@dataclass(frozen=True)
class SlotCost:
    """Cost of one running slot: quantised weights, MACs, input activation elements (per image), out channels."""

    slot: int
    weights: int
    macs: int
    in_numel: int
    out_channels: int
    depthwise: bool = False


class QuantLayout(abc.ABC):
    """The quantisable slots of a space's networks."""

    @property
    @abc.abstractmethod
    def slots(self) -> tuple[str, ...]:
        """Slot names of the largest network, in forward order."""

    @abc.abstractmethod
    def active(self, arch: Any) -> np.ndarray:
        """Boolean mask over slots: which run for ``arch``."""

    @abc.abstractmethod
    def costs(self, arch: Any) -> list[SlotCost]:
        """One :class:`SlotCost` per running slot, in forward order."""

    @abc.abstractmethod
    def cardinality(self, factor: Callable[[int], int]) -> int:
        """``sum over architectures of prod over running slots of factor(slot)`` (exact)."""

    @property
    def fixed_slots(self) -> tuple[int, ...]:
        """First and last layer (kept at 8 bits, as in EQ-Net)."""
        return (0, len(self.slots) - 1)


@dataclass(frozen=True)
class FixedLayout(QuantLayout):
    """A static network: every slot always runs; ``costs`` gives each slot's cost."""

    names: tuple[str, ...]
    slot_costs: tuple[SlotCost, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.slot_costs) or len(self.names) < 2:
            raise ValueError(f"need one cost per slot and at least 2 slots, got {len(self.names)} names "
                             f"and {len(self.slot_costs)} costs")

    @property
    def slots(self) -> tuple[str, ...]:
        return self.names

    def active(self, arch: Any) -> np.ndarray:
        return np.ones(len(self.names), dtype=bool)

    def costs(self, arch: Any) -> list[SlotCost]:
        return list(self.slot_costs)

    def cardinality(self, factor: Callable[[int], int]) -> int:
        return int(np.prod([factor(i) for i in range(len(self.names))], dtype=object))


def _conv_cost(slot: int, in_hw: int, out_hw: int, in_c: int, out_c: int, k: int = 1, groups: int = 1) -> SlotCost:
    weights = out_c * (in_c // groups) * k * k
    return SlotCost(slot, weights, out_hw * out_hw * weights, in_hw * in_hw * in_c, out_c, groups > 1)


@dataclass(frozen=True)
class MBv3Layout(QuantLayout):
    """OFA-MobileNetV3: stem, first block (depthwise, project), per block expand / depthwise / [SE reduce, SE
    expand] / project, final expand, feature mix, classifier."""

    space: OFAMobileNetV3Space
    _slots: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _block_slots: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sp = self.space
        names = ["stem", "first.dw", "first.project"]
        blocks = []
        for s in range(sp.n_stages):
            for b in range(sp.max_depth):
                parts = ["expand", "dw"] + (["se_reduce", "se_expand"] if sp.se[s] else []) + ["project"]
                blocks.append(tuple(range(len(names), len(names) + len(parts))))
                names += [f"s{s}b{b}.{p}" for p in parts]
        names += ["final_expand", "feature_mix", "classifier"]
        object.__setattr__(self, "_slots", tuple(names))
        object.__setattr__(self, "_block_slots", tuple(blocks))

    @property
    def slots(self) -> tuple[str, ...]:
        return self._slots

    def active(self, arch: Any) -> np.ndarray:
        on = np.ones(len(self._slots), dtype=bool)
        per = self.space.max_depth
        for i, slots in enumerate(self._block_slots):
            if i % per >= arch.d[i // per]:
                on[list(slots)] = False
        return on

    def costs(self, arch: Any) -> list[SlotCost]:
        layers = self.space.layers(arch)
        slots = iter(np.flatnonzero(self.active(arch)).tolist())
        out: list[SlotCost] = []
        for layer in layers:
            out += _mbv3_layer_costs(layer, slots)
        return out

    def cardinality(self, factor: Callable[[int], int]) -> int:
        sp, per = self.space, self.space.max_depth
        fixed = [i for i in range(len(self._slots)) if not any(i in b for b in self._block_slots)]
        total = int(np.prod([factor(i) for i in fixed], dtype=object)) * len(sp.resolutions)
        per_choice = len(sp.kernels) * len(sp.expands)
        for s in range(sp.n_stages):
            stage = 0
            for d in sp.depths:
                term = 1
                for b in range(d):
                    term *= per_choice * int(np.prod([factor(i) for i in self._block_slots[s * per + b]], dtype=object))
                stage += term
            total *= stage
        return total


def _mbv3_layer_costs(layer: LayerSpec, slots: Any) -> list[SlotCost]:
    hw, ohw, ic, oc = layer.in_hw, layer.out_hw, layer.in_c, layer.out_c
    if layer.op == "pool":
        return []
    if layer.op in ("conv", "final_expand"):
        return [_conv_cost(next(slots), hw, ohw, ic, oc, layer.kernel)]
    if layer.op in ("feature_mix", "classifier"):
        return [_conv_cost(next(slots), 1, 1, ic, oc)]
    if layer.op != "mbconv":
        raise ValueError(f"unknown layer op {layer.op!r}")
    mid, out = layer.mid_c, []
    if layer.has_expand:
        out.append(_conv_cost(next(slots), hw, hw, ic, mid))
    out.append(_conv_cost(next(slots), hw, ohw, mid, mid, layer.kernel, groups=mid))
    if layer.se:
        out.append(_conv_cost(next(slots), 1, 1, mid, layer.se_c))
        out.append(_conv_cost(next(slots), 1, 1, layer.se_c, mid))
    out.append(_conv_cost(next(slots), ohw, ohw, mid, oc))
    return out


_CONV_OPS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


@dataclass(frozen=True)
class NB201Layout(QuantLayout):
    """NAS-Bench-201: stem, one slot per (cell, edge) that holds a conv op, reduction blocks (conv_a, conv_b,
    shortcut conv), classifier."""

    space: NB201Space
    _slots: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names, cell = ["stem"], 0
        for stage in range(3):
            if stage:
                names += [f"res{stage}.conv_a", f"res{stage}.conv_b", f"res{stage}.shortcut"]
            for _ in range(self.space.N):
                names += [f"cell{cell}.edge{t}<-{f}" for t, f in NB201_EDGES]
                cell += 1
        object.__setattr__(self, "_slots", tuple(names + ["classifier"]))

    @property
    def slots(self) -> tuple[str, ...]:
        return self._slots

    def active(self, arch: Any) -> np.ndarray:
        conv = [op in _CONV_OPS for op in arch.ops]
        return np.array([True if ".edge" not in s else conv[self._edge(s)] for s in self._slots])

    def _edge(self, slot: str) -> int:
        t, f = slot.split(".edge")[1].split("<-")
        return NB201_EDGES.index((int(t), int(f)))

    def costs(self, arch: Any) -> list[SlotCost]:
        sp, on = self.space, self.active(arch)
        hw, out = sp.resolution, []
        for i, s in enumerate(self._slots):
            c = sp.C * 2 ** _stage_of(s, sp.N)
            if not on[i]:
                continue
            if s == "stem":
                out.append(_conv_cost(i, hw, hw, sp.in_chans, sp.C, 3))
            elif s == "classifier":
                out.append(_conv_cost(i, 1, 1, 4 * sp.C, sp.n_classes))
            elif s.startswith("res"):
                stage = int(s[3])
                c_in, hw_in, hw_out = sp.C * 2 ** (stage - 1), _hw(sp.resolution, stage - 1), _hw(sp.resolution, stage)
                cost = {"conv_a": (hw_in, hw_out, c_in, 3), "conv_b": (hw_out, hw_out, c, 3),
                        "shortcut": (hw_out, hw_out, c_in, 1)}[s.split(".")[1]]
                out.append(_conv_cost(i, cost[0], cost[1], cost[2], c, cost[3]))
            else:
                k, h = _CONV_OPS[arch.ops[self._edge(s)]], _hw(sp.resolution, _stage_of(s, sp.N))
                out.append(_conv_cost(i, h, h, c, c, k))
        return out

    def cardinality(self, factor: Callable[[int], int]) -> int:
        n_other = len(self.space.ops) - sum(op in _CONV_OPS for op in self.space.ops)
        n_conv = len(self.space.ops) - n_other
        total = int(np.prod([factor(i) for i, s in enumerate(self._slots) if ".edge" not in s], dtype=object))
        for j in range(len(NB201_EDGES)):
            slots = [i for i, s in enumerate(self._slots) if ".edge" in s and self._edge(s) == j]
            total *= n_other + n_conv * int(np.prod([factor(i) for i in slots], dtype=object))
        return total


def _hw(resolution: int, stage: int) -> int:
    for _ in range(stage):
        resolution = (resolution + 1) // 2
    return resolution


def _stage_of(slot: str, n_cells: int) -> int:
    if slot.startswith("cell"):
        return int(slot[4:].split(".")[0]) // n_cells
    if slot.startswith("res"):
        return int(slot[3])
    return 0


_LAYOUTS: dict[type, Callable[[Any], QuantLayout]] = {OFAMobileNetV3Space: MBv3Layout, NB201Space: NB201Layout}


def register_layout(space_type: type) -> Callable[[Callable[[Any], QuantLayout]], Callable[[Any], QuantLayout]]:
    """Decorator: ``@register_layout(MySpace)`` over a factory ``space -> QuantLayout``."""

    def deco(factory: Callable[[Any], QuantLayout]) -> Callable[[Any], QuantLayout]:
        if space_type in _LAYOUTS:
            raise ValueError(f"a quantisation layout for {space_type.__name__} is already registered")
        _LAYOUTS[space_type] = factory
        return factory

    return deco


def layout_for(space: Any) -> QuantLayout:
    """The layout of ``space``: its own ``quant_layout()`` method, else a registered factory for its type."""
    own = getattr(space, "quant_layout", None)
    if callable(own):
        return own()
    for cls in type(space).__mro__:
        if cls in _LAYOUTS:
            return _LAYOUTS[cls](space)
    known: Sequence[str] = sorted(c.__name__ for c in _LAYOUTS)
    raise TypeError(
        f"no quantisation layout for space type {type(space).__name__}; known: {list(known)}. Give the space a "
        "quant_layout() method, register one with register_layout, or pass layout=FixedLayout(...)"
    )
