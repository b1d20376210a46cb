"""Cost objectives of quantised architectures, computed from bit-widths (EQ-Net's search objectives). No torch.

- ``model_size_bytes``: quantised weights at their bit-width (rounded up to whole bytes per layer), every other
  parameter (biases, batch-norm affine) at 32 bits, plus the quantisers' own float parameters (one scale per
  tensor or per output channel, one zero point when asymmetric; one scale and zero point per activation).
- ``average_bits``: EQ-Net's average bit-width, weights weighted by parameter count, activations by the number of
  activation elements entering each layer; first and last layer excluded by default (they are fixed at 8 bits).
- ``bitops``: sum over layers of MACs x weight bits x activation bits.

Each has a ``*_many`` form returning a float array over a list of architectures (the objective interface).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search_spaces.quant import JointArch, JointSpace

__all__ = ["model_size_bytes", "average_bits", "bitops", "model_size_bytes_many", "average_bits_many",
           "bitops_many"]


def model_size_bytes(space: JointSpace, joint: JointArch) -> int:
    """Bytes needed to store the quantised network: quantised weights + fp32 remainder + quantiser parameters."""
    space.validate(joint)
    costs = space.lay.costs(joint.arch)
    layers = joint.policy.layers
    quantised = sum(c.weights for c in costs)
    total_params = space.params(joint)
    if total_params < quantised:
        raise ValueError(f"space {space.base.name!r} reports {total_params} parameters but its layout quantises "
                         f"{quantised} weights; the layout does not match the space")
    size = 4 * (total_params - quantised)
    for c in costs:
        q = layers[c.slot]
        assert q is not None  # costs only list running slots
        size += -(-c.weights * q.w_bits // 8)
        n_scales = c.out_channels if q.per_channel else 1
        size += 4 * n_scales * (1 if q.w_symmetric else 2)
        size += 4 * (1 if q.a_symmetric else 2)
    return int(size)


def average_bits(space: JointSpace, joint: JointArch, kind: str = "w", *, include_fixed: bool = False) -> float:
    """Weight (``kind="w"``, parameter-weighted) or activation (``"a"``, input-size-weighted) average bits."""
    if kind not in ("w", "a"):
        raise ValueError(f"kind must be 'w' (weights) or 'a' (activations), got {kind!r}")
    space.validate(joint)
    num = den = 0.0
    for c in space.lay.costs(joint.arch):
        if not include_fixed and c.slot in space.fixed_slots:
            continue
        q = joint.policy.layers[c.slot]
        assert q is not None
        weight = c.weights if kind == "w" else c.in_numel
        num += weight * (q.w_bits if kind == "w" else q.a_bits)
        den += weight
    if den == 0:
        raise ValueError(f"architecture {joint.arch.id} has no free quantised layer to average over")
    return num / den


def bitops(space: JointSpace, joint: JointArch) -> int:
    space.validate(joint)
    total = 0
    for c in space.lay.costs(joint.arch):
        q = joint.policy.layers[c.slot]
        assert q is not None
        total += c.macs * q.w_bits * q.a_bits
    return int(total)


def model_size_bytes_many(space: JointSpace, archs: Sequence[JointArch]) -> np.ndarray:
    return np.array([model_size_bytes(space, a) for a in archs], dtype=float)


def average_bits_many(space: JointSpace, archs: Sequence[JointArch], kind: str = "w", *,
                      include_fixed: bool = False) -> np.ndarray:
    return np.array([average_bits(space, a, kind, include_fixed=include_fixed) for a in archs], dtype=float)


def bitops_many(space: JointSpace, archs: Sequence[JointArch]) -> np.ndarray:
    return np.array([bitops(space, a) for a in archs], dtype=float)
