"""Objectives of quantisation-policy search (EQ-Net's search, Xu et al., ICCV 2023) on joint arch x policy spaces.

Registered in :data:`~nas.search.objectives.OBJECTIVES` (importing this module registers them):

- ``model_size``: bytes of the quantised network from its bit-widths (:mod:`search_spaces.quant_costs`), cheap;
- ``avg_bits``: EQ-Net's average weight (parameter-weighted) or activation (input-size-weighted) bit-width over the
  free layers, cheap; usually bounded with ``Constraint.on(..., lower=..)`` or ``upper=..``;
- ``bitops``: sum of MACs x weight bits x activation bits (GBitOPs), cheap;
- ``supernet_accuracy``: BN-recalibrated top-1 of each (arch, policy) subnet of a trained quantised supernet,
  expensive (one evaluation per query).

Accuracy from a predictor fitted on supernet measurements uses the generic ``predictor`` objective; the joint
space's ``onehot`` (one-hot bits per layer, plus modes and architecture genes) is the predictor encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.search.objectives import OBJECTIVES, Objective
from search_spaces.quant import JointSpace
from search_spaces.quant_costs import average_bits_many, bitops_many, model_size_bytes_many

__all__ = ["model_size_objective", "avg_bits_objective", "bitops_objective", "supernet_accuracy_objective"]


def _joint(space: Any) -> JointSpace:
    if not isinstance(space, JointSpace):
        raise TypeError(f"quantisation objectives need a joint arch x policy space (e.g. quant_nb201_tiny), "
                        f"got {type(space).__name__} {getattr(space, 'name', '')!r}")
    return space


@OBJECTIVES.register("model_size")
def model_size_objective(space: JointSpace, *, scale: float = 1e-3, name: str = "size_kB") -> Objective:
    """Model size from bit-widths (kilobytes by default)."""
    sp = _joint(space)
    return Objective(name, lambda archs: model_size_bytes_many(sp, archs) * scale)


@OBJECTIVES.register("avg_bits")
def avg_bits_objective(space: JointSpace, *, which: str = "w", include_fixed: bool = False,
                       name: str | None = None) -> Objective:
    """Average weight (``which="w"``) or activation (``"a"``) bits; first/last layer excluded by default."""
    sp = _joint(space)
    if which not in ("w", "a"):
        raise ValueError(f"which must be 'w' (weights) or 'a' (activations), got {which!r}")
    return Objective(name or f"avg_{which}_bits",
                     lambda archs: average_bits_many(sp, archs, which, include_fixed=include_fixed))


@OBJECTIVES.register("bitops")
def bitops_objective(space: JointSpace, *, scale: float = 1e-9, name: str = "GBitOPs") -> Objective:
    sp = _joint(space)
    return Objective(name, lambda archs: bitops_many(sp, archs) * scale)


@OBJECTIVES.register("supernet_accuracy")
def supernet_accuracy_objective(space: JointSpace, *, model: Any, evalset: Any, name: str = "top1") -> Objective:
    """Top-1 (%) of each subnet of a trained quantised supernet (``nas.evaluation.EvalSet``), expensive."""
    from nas.evaluation import evaluate_subnets

    _joint(space)

    def evaluate(archs: Sequence[Any]) -> np.ndarray:
        return np.array([r["top1"] for r in evaluate_subnets(model, list(archs), evalset)], dtype=np.float64)

    return Objective(name, evaluate, direction="max", expensive=True)
