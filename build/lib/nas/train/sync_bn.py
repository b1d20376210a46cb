"""Synchronised batch norm for elastic supernets under DistributedDataParallel (works with gloo on CPU and nccl).

``torch.nn.SyncBatchNorm`` is not enough here: the OFA supernet's :class:`~supernets.ops.ElasticBatchNorm2d` wraps
a full-width ``nn.BatchNorm2d`` and, for a narrower subnet, normalises a channel *prefix* with ``F.batch_norm`` on
sliced weights and statistics, so converting the inner module would synchronise only the full-width case. (torch's
implementation also rejects CPU tensors.) Here the same statistics are computed over the global batch for any
active width: every process sums its channel prefix, the sums are all-reduced by a differentiable all-reduce (its
backward all-reduces the gradients, as in torch's ``SyncBatchNorm``; torch's functional collectives cost ~10x more
per call on gloo), first for the mean and then for the centred second moment (two passes: no cancellation from
E[x^2] - E[x]^2). The running statistics of the prefix are updated like ``F.batch_norm`` (unbiased variance,
momentum or cumulative average), identically on every process.

Conversion swaps modules but shares their parameters and buffers, so state-dict keys, the optimizer's parameter
list and checkpoints are unchanged, and a converted model resumes from (and writes) the same files as an
unconverted one. Synchronisation happens only inside :func:`synchronised_bn`, which the trainer enters around its
training forwards; evaluation and BN recalibration (run identically on every process) stay local.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from supernets.ops import ElasticBatchNorm2d

__all__ = ["SyncElasticBatchNorm2d", "SyncBatchNorm2d", "convert_sync_bn", "synchronised_bn", "sync_batch_norm"]


class _AllSum(torch.autograd.Function):
    """Sum over processes; the gradient of every input is the sum of the output gradients of all processes."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    return _AllSum.apply(t)


def sync_batch_norm(x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm, channels: int) -> torch.Tensor:
    """Training-mode batch norm of ``x`` over the batches of all processes, with ``bn``'s first ``channels``."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))  # half precision (AMP) is normalised in float32
    count = torch.tensor([xf.numel() // channels], dtype=xf.dtype, device=x.device)
    packed = _all_sum(torch.cat([xf.sum((0, 2, 3)), count]))
    total = packed[-1].detach()
    mean = packed[:-1] / total
    centred = xf - mean[None, :, None, None]
    var = _all_sum((centred * centred).sum((0, 2, 3))) / total
    if bn.track_running_stats:
        _update_running(bn, channels, mean.detach(), var.detach() * (total / (total - 1).clamp_min(1)))
    y = centred * torch.rsqrt(var + bn.eps)[None, :, None, None]
    if bn.weight is not None:
        y = y * bn.weight[:channels, None, None].to(xf.dtype) + bn.bias[:channels, None, None].to(xf.dtype)
    return y.to(x.dtype)


@torch.no_grad()
def _update_running(bn: nn.modules.batchnorm._BatchNorm, c: int, mean: torch.Tensor, var: torch.Tensor) -> None:
    count, rm, rv = bn.num_batches_tracked, bn.running_mean, bn.running_var
    if count is None or rm is None or rv is None:
        return
    count.add_(1)
    factor = 1.0 / float(count) if bn.momentum is None else float(bn.momentum)
    rm[:c].mul_(1 - factor).add_(mean.to(rm.dtype), alpha=factor)
    rv[:c].mul_(1 - factor).add_(var.to(rv.dtype), alpha=factor)


def _syncing(module: nn.Module, training: bool) -> bool:
    return (getattr(module, "sync_enabled", False) and training and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


class SyncElasticBatchNorm2d(ElasticBatchNorm2d):
    """An :class:`ElasticBatchNorm2d` (sharing the given full-width ``bn``) that synchronises any active width."""

    def __init__(self, bn: nn.BatchNorm2d, *, inplace: bool = False) -> None:
        super().__init__(bn.num_features, inplace=inplace)
        self.bn = bn
        self.sync_enabled = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _syncing(self, self.bn.training):
            return sync_batch_norm(x, self.bn, x.size(1))
        return super().forward(x)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """A plain ``BatchNorm2d`` (NB201 cells, stems) synchronised like :class:`SyncElasticBatchNorm2d`."""

    sync_enabled = False

    @classmethod
    def sharing(cls, bn: nn.BatchNorm2d) -> SyncBatchNorm2d:
        new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats)
        new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _syncing(self, self.training):
            return sync_batch_norm(x, self, x.size(1))
        return super().forward(x)


def convert_sync_bn(model: nn.Module) -> int:
    """Swap every elastic and plain 2-d batch norm of ``model`` for its synchronised form; returns how many."""
    n = 0
    for parent in list(model.modules()):
        if isinstance(parent, ElasticBatchNorm2d):
            continue  # its inner full-width BN is handled by the elastic wrapper
        for name, child in list(parent.named_children()):
            if type(child) is ElasticBatchNorm2d:
                setattr(parent, name, SyncElasticBatchNorm2d(child.bn, inplace=child.inplace))
                n += 1
            elif type(child) is nn.BatchNorm2d:
                setattr(parent, name, SyncBatchNorm2d.sharing(child))
                n += 1
    return n


@contextmanager
def synchronised_bn(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, converted batch norms in training mode use global-batch statistics."""
    mods = [m for m in model.modules() if isinstance(m, (SyncElasticBatchNorm2d, SyncBatchNorm2d))]
    before = [m.sync_enabled for m in mods]
    try:
        for m in mods:
            m.sync_enabled = enabled
        yield model
    finally:
        for m, b in zip(mods, before):
            m.sync_enabled = b
