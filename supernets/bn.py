"""Batch-norm recalibration of the active subnet (OFA's ``set_running_statistics``), without deep copies.

Shared BN statistics are polluted by every sampled subnet, so a subnet is evaluated after re-estimating its
running mean/variance on a fixed, seeded subset of training images. Here that is done in place: inside
:func:`bn_recalibration` every BatchNorm uses a cumulative average (``momentum=None``) from freshly reset
statistics, everything else stays in eval mode, and on exit each BN's momentum and train/eval flags are
restored, even on error. Only the active channel prefix of an elastic BN is touched. Standard BatchNorm modules
compute their batch statistics in one pass on CPU while recalibrating (:mod:`supernets.bn_stats`), through forward
hooks that swap the module's state for the call; no module's ``forward`` is replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from supernets.bn_stats import one_pass_moments

__all__ = ["bn_recalibration", "recalibrate_bn", "recalibrated", "batch_statistics"]


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _OnePassStatistics:
    """Forward hooks that give a standard BatchNorm training-mode results from one-pass batch statistics.

    Before each forward (autograd off, a layout :func:`bn_stats.one_pass_moments` handles) the batch's mean and
    variance fold into the running averages exactly as torch's training-mode update does, the module is put in eval
    mode and its running buffers are swapped for the batch statistics, so torch's eval kernel normalises with them;
    after the forward the averaged buffers and training mode come back. Other calls run torch's own training mode.
    The module's ``forward`` is never replaced."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        self.bn, self.saved = bn, None
        self.handles = [bn.register_forward_pre_hook(self.before), bn.register_forward_hook(self.after)]

    def before(self, bn: nn.Module, args: tuple) -> None:
        x = args[0]
        moments = None if torch.is_grad_enabled() else one_pass_moments(x)
        if moments is None:
            return
        mean, var, count = moments
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        bn.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1.0 - factor).add_(var * (count / (count - 1)), alpha=factor)
        self.saved = (bn.running_mean, bn.running_var)
        bn.running_mean, bn.running_var, bn.training = mean, var, False

    def after(self, bn: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.saved is not None:
            bn.running_mean, bn.running_var = self.saved
            bn.training, self.saved = True, None

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.after(self.bn, (), torch.empty(0))  # an exception inside a forward leaves the swap undone


def _hookable(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """A standard BatchNorm (torch's own forward, running statistics)."""
    return (bn.track_running_stats and bn.num_batches_tracked is not None
            and type(bn).forward is nn.modules.batchnorm._BatchNorm.forward)


@contextmanager
def bn_recalibration(model: nn.Module) -> Iterator[nn.Module]:
    """Reset BN statistics, switch BN to cumulative-average training mode, restore modes on exit."""
    bns = _batch_norms(model)
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    hooks: list[_OnePassStatistics] = []
    try:
        model.eval()
        for bn in bns:
            if bn.track_running_stats:
                bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        hooks = [_OnePassStatistics(bn) for bn in bns if _hookable(bn)]
        yield model
    finally:
        for hook in hooks:
            hook.remove()
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


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm normalises with the batch's own statistics; running statistics and all modes are restored."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = {m: m.training for m in model.modules()}
    saved = [{k: v.clone() for k, v in bn.named_buffers(recurse=False)} for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.train()
        yield model
    finally:
        with torch.no_grad():
            for bn, buffers in zip(bns, saved):
                for k, v in buffers.items():
                    getattr(bn, k).copy_(v)
        for m, mode in modes.items():
            m.training = mode
