"""EQ-Net's weight-distribution regulariser (WDR-Loss, Xu et al., ICCV 2023, Eq. 6; RobustQuant's kurtosis target).

For every quantised layer's latent weights ``w`` (all layers but the first, as in the reference code)::

    skew = E[((w - mu) / sigma)^3],   kurt = E[((w - mu) / sigma)^4]
    L = skew_weight * mean_l skew_l^2 + kurt_weight * mean_l (kurt_l - target)^2

with ``target = 1.8`` (the kurtosis of a uniform distribution). The reference code weights the terms 1.0 and 0.015,
not equally as the paper's Eq. 6 says; those are the defaults here.
"""

from __future__ import annotations

import torch
from torch import nn

from supernets.quant.ops import QuantLayer

__all__ = ["weight_moments", "wdr_loss"]


def weight_moments(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(skewness, kurtosis) of all entries of ``w`` (population moments)."""
    w = w.reshape(-1).float()
    z = (w - w.mean()) / w.std(unbiased=False).clamp_min(1e-12)
    return z.pow(3).mean(), z.pow(4).mean()


def wdr_loss(model: nn.Module, *, skew_weight: float = 1.0, kurt_weight: float = 0.015,
             target_kurtosis: float = 1.8, skip_first: bool = True) -> torch.Tensor:
    """The WDR regulariser over the full latent weights of ``model``'s quantised layers (module order)."""
    layers = [m for m in model.modules() if isinstance(m, QuantLayer)]
    if skip_first:
        layers = layers[1:]
    if not layers:
        raise ValueError("WDR needs at least one quantised layer (besides the first); the model has none")
    moments = [weight_moments(q.adapter.full_weight(q.op)) for q in layers]
    skew = torch.stack([m[0] for m in moments])
    kurt = torch.stack([m[1] for m in moments])
    return skew_weight * skew.pow(2).mean() + kurt_weight * (kurt - target_kurtosis).pow(2).mean()
