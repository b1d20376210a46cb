"""EQ-Net's complexity-conditioned bit sampling (CQAP data; Xu et al., ICCV 2023, after AttentiveNAS). No torch.

A :class:`BitMap` is the paper's *probability map*: for every average-bit bin (step 0.2) and every free slot of a
joint space, the distribution of that slot's weight (and, separately, activation) bit-width among sampled policies
whose average falls in the bin. :meth:`BitMap.draw` picks a target average bit-width uniformly in
``[lo, hi]`` (EQ-Net: [3.4, 7.6] for 3..8-bit mobile nets, i.e. 0.4 inside the bit range), then every free slot's
bits from the map row of the target's bin; architectures come from the base space, modes from the mode genes.
The sampled policies therefore cover low, middle and high average bit-widths evenly, where uniform per-layer bits
concentrate around the middle of the range.

Averages are EQ-Net's: weights weighted by parameter count, activations by input size, first/last slots excluded
(:func:`~search_spaces.quant_costs.average_bits`). Deviation, on purpose: the reference builds the map from 500k
*uniform* bit vectors; with ~40 free slots (OFA-MBv3) their averages fall within about +-0.5 bit of the middle, so
the outer bins would stay empty. Here each sampled policy first draws a centre uniformly over the bit range and its
slots' bits from a discretised Gaussian around it (``spread`` bits), which fills every bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_spaces.base import as_generator
from search_spaces.errors import BadInputError
from search_spaces.quant import JointArch, JointSpace

__all__ = ["BitMap", "build_bit_map", "slot_weights"]


def slot_weights(space: JointSpace, arch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(free running slot indices, their parameter counts, their input sizes) of ``arch``."""
    fixed = set(space.fixed_slots)
    costs = [c for c in space.lay.costs(arch) if c.slot not in fixed]
    return (np.array([c.slot for c in costs], dtype=np.int64), np.array([c.weights for c in costs], dtype=float),
            np.array([c.in_numel for c in costs], dtype=float))


def _categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of ``probs`` (rows sum to 1)."""
    u = rng.random(probs.shape[:-1])[..., None]
    return np.minimum((probs.cumsum(-1) < u).sum(-1), probs.shape[-1] - 1)


@dataclass(frozen=True, eq=False)  # tables are arrays: identity, not element-wise, equality
class BitMap:
    """P(bit of slot | average-bit bin) for weights and activations of a joint space."""

    space: JointSpace
    step: float
    lo: float
    hi: float
    w_table: np.ndarray = field(repr=False)  # (bins, slots, len(space.w_bits)); rows sum to 1 (uniform if unseen)
    a_table: np.ndarray = field(repr=False)

    @property
    def n_bins(self) -> int:
        return self.w_table.shape[0]

    def bin_of(self, avg: np.ndarray | float, kind: str = "w") -> np.ndarray:
        bits = self.space.w_bits if kind == "w" else self.space.a_bits
        return np.clip(np.floor((np.asarray(avg) - bits[0]) / self.step + 1e-9), 0, self.n_bins - 1).astype(np.int64)

    def draw(self, rng: np.random.Generator | int | None, *, target: float | None = None, arch: Any = None
             ) -> JointArch:
        """One (arch, policy): target average bits uniform in [lo, hi] (or ``target``), bits from its bin's rows."""
        rng = as_generator(rng)
        sp = self.space
        t = float(rng.uniform(self.lo, self.hi)) if target is None else float(target)
        if not sp.w_bits[0] <= t <= sp.w_bits[-1]:
            raise BadInputError(f"target average bits {t} lies outside the space's bit range "
                                f"{sp.w_bits[0]}..{sp.w_bits[-1]}")
        if arch is None:
            arch = sp.fixed_arch if sp.fixed_arch is not None else sp.base.sample(rng)
        free = np.array(sp._free_slots())
        col = {s: j for j, s in enumerate(free)}
        w_idx = _categorical(self.w_table[self.bin_of(t, "w")][[col[s] for s in free]], rng)
        a_idx = _categorical(self.a_table[self.bin_of(t, "a")][[col[s] for s in free]], rng)
        joint = sp.policy_for(arch, sp.w_bits[-1], sp.a_bits[-1])
        joint = sp.with_bits(joint, [sp.w_bits[i] for i in w_idx], [sp.a_bits[i] for i in a_idx])
        return sp.sample_modes(joint, rng)

    def draw_many(self, n: int, rng: np.random.Generator | int | None) -> list[JointArch]:
        rng = as_generator(rng)
        return [self.draw(rng) for _ in range(n)]


def _bit_probs(choices: tuple[int, ...], centres: np.ndarray, spread: float) -> np.ndarray:
    d = np.asarray(choices, dtype=float)[None, :] - centres[:, None]
    p = np.exp(-0.5 * (d / spread) ** 2)
    return p / p.sum(1, keepdims=True)


def build_bit_map(space: JointSpace, *, n_archs: int = 200, per_arch: int = 250, step: float = 0.2,
                  spread: float = 1.0, margin: float = 0.4, seed: int = 0) -> BitMap:
    """Sample ``n_archs`` x ``per_arch`` policies (see the module notes) and tabulate P(bit | average-bit bin).

    Targets are later drawn in ``[min bits + margin, max bits - margin]`` (EQ-Net's [3.4, 7.6] on 3..8 bits).
    """
    if not isinstance(space, JointSpace):
        raise BadInputError(f"the CQAP bit map needs a joint (arch x quantisation policy) space, "
                            f"got {type(space).__name__}")
    if step <= 0 or spread <= 0 or n_archs < 1 or per_arch < 1:
        raise BadInputError(f"need step > 0, spread > 0, n_archs >= 1, per_arch >= 1; got step={step}, "
                            f"spread={spread}, n_archs={n_archs}, per_arch={per_arch}")
    rng = np.random.default_rng(seed)
    free = space._free_slots()
    col = {s: j for j, s in enumerate(free)}
    tables = []
    for kind, choices in (("w", space.w_bits), ("a", space.a_bits)):
        n_bins = int(np.floor((choices[-1] - choices[0]) / step + 1e-9)) + 1
        tables.append((kind, choices, np.zeros((n_bins, len(free), len(choices)))))
    for _ in range(n_archs):
        arch = space.fixed_arch if space.fixed_arch is not None else space.base.sample(rng)
        slots, params, inputs = slot_weights(space, arch)
        cols = [col[s] for s in slots]
        centres = rng.uniform(space.w_bits[0], space.w_bits[-1], per_arch)
        for kind, choices, table in tables:
            probs = np.repeat(_bit_probs(choices, centres, spread)[:, None, :], len(slots), 1)
            idx = _categorical(probs, rng)  # (per_arch, slots)
            weight = params if kind == "w" else inputs
            avg = (np.asarray(choices)[idx] * weight).sum(1) / weight.sum()
            bins = np.clip(np.floor((avg - choices[0]) / step + 1e-9), 0, len(table) - 1).astype(np.int64)
            np.add.at(table, (bins[:, None], np.array(cols)[None, :], idx), 1.0)
    out = []
    for _, choices, table in tables:
        total = table.sum(-1, keepdims=True)
        out.append(np.where(total > 0, table / np.maximum(total, 1), 1.0 / len(choices)))
    lo, hi = space.w_bits[0] + margin, space.w_bits[-1] - margin
    if lo > hi:
        lo = hi = 0.5 * (space.w_bits[0] + space.w_bits[-1])
    return BitMap(space, step, lo, hi, out[0], out[1])


