"""Which gradient each gene's chosen value is credited with, for PA&DA path importance (Lu et al., CVPR 2023).

PA&DA credits an operation with ``sum ||grad W||`` over the parameters it used (per-tensor L2 norms, summed over
every cell where it ran). An attribution maps ``(supernet, arch)`` -- called after backward -- to one norm per gene
of ``supernet.space``; it is looked up by the supernet's registered name in :data:`GRAD_ATTRIBUTIONS`.

* ``nb201``: exact per-edge attribution by parameter name (``...cells.<i>.edges.<j>.<op>....``): gene ``j`` gets the
  summed norms of its chosen op's parameters over all cells; parameter-free ops get 0, as in the original.
* any other supernet: :func:`path_grad_norm`, the summed norm of every parameter gradient credited to every active
  gene. Averaged per choice by :class:`~nas.train.pada_core.PathImportance`, this estimates the conditional mean of the
  sampled path's gradient norm given the choice, the per-gene marginal of the variance-optimal path distribution.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from search_spaces.registry import Registry

__all__ = ["GRAD_ATTRIBUTIONS", "gene_grad_norms", "path_grad_norm", "nb201_gene_grad_norms"]

Attribution = Callable[[nn.Module, Any], np.ndarray]
GRAD_ATTRIBUTIONS: Registry[np.ndarray] = Registry("gradient attribution")

_NB201_EDGE = re.compile(r"(?:^|\.)cells\.\d+\.edges\.(\d+)\.([A-Za-z0-9_]+)\.")


def path_grad_norm(module: nn.Module) -> float:
    """Sum of the L2 norms of all present parameter gradients."""
    return float(sum(float(p.grad.norm()) for p in module.parameters() if p.grad is not None))


@GRAD_ATTRIBUTIONS.register("nb201")
def nb201_gene_grad_norms(supernet: nn.Module, arch: Any) -> np.ndarray:
    """Per edge: summed gradient norms of the chosen op's parameters over every cell."""
    out = np.zeros(len(arch.ops))
    for name, p in supernet.named_parameters():
        m = _NB201_EDGE.search(name)
        if m is None or p.grad is None:
            continue
        edge, op = int(m.group(1)), m.group(2)
        if arch.ops[edge] == op:
            out[edge] += float(p.grad.norm())
    return out


def gene_grad_norms(supernet: nn.Module, arch: Any) -> np.ndarray:
    """One gradient norm per gene of ``supernet.space`` for the arch just back-propagated."""
    name = getattr(supernet, "name", None)
    if isinstance(name, str) and name in GRAD_ATTRIBUTIONS:
        return np.asarray(GRAD_ATTRIBUTIONS.get(name)(supernet, arch), dtype=np.float64)
    n_genes = len(supernet.space.genes())
    return np.full(n_genes, path_grad_norm(supernet))
