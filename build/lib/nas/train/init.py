"""Initialisation and regularisation switches used by training recipes.

``zero_init_residual`` sets the last BN gamma of every identity-shortcut block to zero so each residual block
starts as the identity (BigNAS; Goyal et al. 2017), which BigNAS needs to train big and small children together.
``set_dropout`` switches the dropout of every ``nn.Dropout`` in a model (BigNAS: only on the largest child).
"""

from __future__ import annotations

import torch
from torch import nn

from supernets.ofa_mbv3 import ElasticMBConv
from supernets.static import MBConv

__all__ = ["zero_init_residual", "set_dropout", "dropout_rates"]


@torch.no_grad()
def zero_init_residual(model: nn.Module) -> int:
    """Zero the last BN gamma of every block with an identity shortcut; returns how many were zeroed."""
    n = 0
    for m in model.modules():
        if isinstance(m, ElasticMBConv) and m.skip:
            m.project_bn.bn.weight.zero_()
            n += 1
        elif isinstance(m, MBConv) and m.skip and hasattr(m.project, "bn"):
            m.project.bn.weight.zero_()
            n += 1
    return n


def dropout_rates(model: nn.Module) -> dict[str, float]:
    """The configured rate of every dropout module, by name (to restore after ``set_dropout(model, 0)``)."""
    return {name: float(m.p) for name, m in model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)}


def set_dropout(model: nn.Module, rates: dict[str, float] | float) -> None:
    """Set every dropout module's rate: one value for all, or per module name (as from :func:`dropout_rates`)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = rates if isinstance(rates, float) else rates.get(name, m.p)
