"""Which gradient each gene's chosen value is credited with, for PA&DA path importance (Lu et al., CVPR 2023).

PA&DA credits an operation with ``sum ||grad W||`` over the parameters it used (per-tensor L2 norms, summed over
every cell where it ran). The knowledge of which weights a gene's choice selects lives on the supernet, as its
``gene_grad_norms(arch)`` capability (called after backward, one norm per gene of ``supernet.space``): NB201 credits
each edge with its chosen op over all cells; OFA-MobileNetV3 and the ViT credit each block gene with that block's
kernel / width / attention / MLP weights. A supernet without it is a :class:`MissingCapabilityError`, never a
silent whole-path credit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from search_spaces.base import require
from supernets.base import grad_norm

__all__ = ["gene_grad_norms", "path_grad_norm"]


def path_grad_norm(module: nn.Module) -> float:
    """Sum of the L2 norms of all present parameter gradients."""
    return grad_norm(module)


def gene_grad_norms(supernet: nn.Module, arch: Any) -> np.ndarray:
    """One gradient norm per gene of ``supernet.space`` for the arch just back-propagated."""
    fn = require(supernet, "gene_grad_norms", needed_by="PA&DA path importance")
    return np.asarray(fn(arch), dtype=np.float64)
