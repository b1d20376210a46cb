"""Batch-norm recalibration of the active subnet (OFA's ``set_running_statistics``), without deep copies.

Shared BN statistics are polluted by every sampled subnet, so a subnet is evaluated after re-estimating its
running mean/variance on a fixed, seeded subset of training images. Here that is done in place: inside
:func:`bn_recalibration` every BatchNorm uses a cumulative average (``momentum=None``) from freshly reset
statistics, everything else stays in eval mode, and on exit each BN's momentum and train/eval flags are
restored, even on error. Only the active channel prefix of an elastic BN is touched. Standard BatchNorm modules
compute their batch statistics in one pass on CPU while recalibrating (:mod:`supernets.bn_stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from supernets.bn_stats import batch_norm

__all__ = ["bn_recalibration", "recalibrate_bn", "recalibrated"]


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _recal_forward(bn: nn.modules.batchnorm._BatchNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    """``bn``'s training-mode forward (torch's ``_BatchNorm.forward``) through :func:`bn_stats.batch_norm`."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        bn._check_input_dim(x)
        assert bn.num_batches_tracked is not None  # only modules that track running statistics are patched
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        return batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, factor, bn.eps)

    return forward


def _patchable(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """A standard BatchNorm (torch's own forward, running statistics, no instance-level forward of its own)."""
    return (bn.track_running_stats and bn.num_batches_tracked is not None and "forward" not in vars(bn)
            and type(bn).forward is nn.modules.batchnorm._BatchNorm.forward)


@contextmanager
def bn_recalibration(model: nn.Module) -> Iterator[nn.Module]:
    """Reset BN statistics, switch BN to cumulative-average training mode, restore modes on exit."""
    bns = _batch_norms(model)
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    patched = [bn for bn in bns if _patchable(bn)]
    try:
        model.eval()
        for bn in bns:
            if bn.track_running_stats:
                bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for bn in patched:
            bn.forward = _recal_forward(bn)  # type: ignore[method-assign]
        yield model
    finally:
        for bn in patched:
            vars(bn).pop("forward", None)
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | None = None) -> int:
    """Re-estimate BN statistics of ``model``'s active subnet over ``batches`` of images; returns images seen.

    With ``momentum=None`` torch keeps the cumulative average of the per-batch statistics, which is the exact
    mean over the subset when batches have equal size (OFA weights by batch size; use equal batches).
    """
    seen = 0
    with bn_recalibration(model):
        for x in batches:
            x = x.to(device) if device is not None else x
            model(x)
            seen += x.size(0)
    if seen == 0:
        raise ValueError("BN recalibration needs at least one batch of images, got none")
    return seen


@contextmanager
def recalibrated(model: nn.Module, batches: Iterable[torch.Tensor],
                 device: torch.device | None = None) -> Iterator[nn.Module]:
    """Recalibrate for the duration of the block, then put every BN's previous statistics back.

    For evaluating subnets in the middle of training without disturbing the supernet's shared statistics.
    """
    bns = _batch_norms(model)
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
             for bn in bns if bn.track_running_stats]
    try:
        recalibrate_bn(model, batches, device)
        yield model
    finally:
        with torch.no_grad():
            for bn, (mean, var, count) in zip([b for b in bns if b.track_running_stats], saved):
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.num_batches_tracked.copy_(count)
