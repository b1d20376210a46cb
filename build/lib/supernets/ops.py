"""Elastic operators: each wraps one full-size module and computes a slice of it (Once-for-All's dynamic ops).

An op's active configuration (output channels, kernel size) is set by its supernet's ``set_arch`` through
``set_active``; ``forward`` reads it and never changes it. Input channels are taken from the input tensor.
Each op exports its active slice as a plain module and owns the weight surgery of channel re-sorting.

Kernel elasticity follows OFA: a smaller kernel is the centre crop of the next larger one, optionally passed
through a learnable per-layer transform matrix (identity-initialised), e.g. K5 = M(7->5) . centre5(W7).
The ops only take slices (views) of their parameters, so gradients flow to the shared weights. Without autograd
(evaluation, BN recalibration, export) the derived kernels are memoised per op (:class:`DerivedWeight`): a slice
or transformed kernel is computed once per active configuration and reused until a source tensor changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from supernets.bn_stats import batch_norm

__all__ = [
    "DerivedWeight", "ElasticConv2d", "ElasticDepthwiseConv2d", "ElasticBatchNorm2d", "ElasticSE", "ElasticLinear",
    "sub_kernel",
]


class DerivedWeight:
    """Memo of one tensor derived from parameters (a contiguous slice, a transformed kernel) for grad-free forwards.

    With autograd on, ``get`` always recomputes (the graph must reach the shared weights). With it off, the value is
    reused while the configuration ``key`` and every source tensor's storage and in-place version counter are the
    same, so an optimizer step, ``load_state_dict``, channel re-sorting or ``.to(device)`` invalidates it. The memo
    is not module state: it is never saved, and a forward's result still depends only on input and active arch.
    Writes through ``param.data`` bypass version counters; :meth:`Supernet.clear_derived` (also run by ``train()``
    and ``eval()``) drops every memo after such a write.
    """

    __slots__ = ("_key", "_value")

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: Any = None

    def get(self, key: tuple, sources: Sequence[torch.Tensor], compute: Callable[[], Any]) -> Any:
        """``compute()`` (a tensor or a tuple of tensors and None, memoised contiguous) when autograd is off."""
        if torch.is_grad_enabled():
            return compute()
        full = (key, torch.is_inference_mode_enabled(), *((t.data_ptr(), t._version) for t in sources))
        if full != self._key or self._value is None:
            value = compute()
            self._value, self._key = _contiguous(value), full
        return self._value

    def clear(self) -> None:
        self._key, self._value = None, None

    def __deepcopy__(self, memo: dict) -> DerivedWeight:
        return DerivedWeight()


def _contiguous(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.contiguous()
    return tuple(v.contiguous() if isinstance(v, torch.Tensor) else v for v in value)


class ElasticConv2d(nn.Module):
    """Dense conv whose active output channels are a prefix of the full conv's; inputs sliced to ``x.size(1)``."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, kernel // 2, bias=bias)
        self.active_out = out_c
        self._derived = DerivedWeight()

    def set_active(self, out_c: int) -> None:
        if not 0 < out_c <= self.conv.out_channels:
            raise ValueError(f"active out channels {out_c} not in [1, {self.conv.out_channels}]")
        self.active_out = out_c

    def active_weight(self, in_c: int) -> torch.Tensor:
        return self.conv.weight[: self.active_out, :in_c]

    def active_bias(self) -> torch.Tensor | None:
        return None if self.conv.bias is None else self.conv.bias[: self.active_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_c, conv = x.size(1), self.conv
        sources = (conv.weight,) if conv.bias is None else (conv.weight, conv.bias)
        w, b = self._derived.get((self.active_out, in_c), sources,
                                 lambda: (self.active_weight(in_c), self.active_bias()))
        return F.conv2d(x, w, b, conv.stride, conv.padding)

    def export(self, in_c: int) -> nn.Conv2d:
        c = self.conv
        out = nn.Conv2d(in_c, self.active_out, c.kernel_size, c.stride, c.padding, bias=c.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.active_weight(in_c))
            if c.bias is not None:
                out.bias.copy_(self.active_bias())
        return out

    @torch.no_grad()
    def permute_out(self, perm: torch.Tensor) -> None:
        self.conv.weight.copy_(self.conv.weight[perm])
        if self.conv.bias is not None:
            self.conv.bias.copy_(self.conv.bias[perm])

    @torch.no_grad()
    def permute_in(self, perm: torch.Tensor) -> None:
        self.conv.weight.copy_(self.conv.weight[:, perm])


@functools.lru_cache(maxsize=64)
def _centre_index(big: int, small: int, device: torch.device) -> torch.Tensor:
    """Row-major flat indices of the centre ``small x small`` window of a ``big x big`` grid."""
    start = (big - small) // 2
    with torch.inference_mode(False):  # a normal tensor even if first asked for in inference mode (autograd saves it)
        return torch.tensor([(start + i) * big + start + j for i in range(small) for j in range(small)],
                            device=device)


def sub_kernel(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centre ``kernel x kernel`` crop of a square kernel."""
    start = (weight.size(-1) - kernel) // 2
    return weight[..., start : start + kernel, start : start + kernel]


class ElasticDepthwiseConv2d(nn.Module):
    """Depthwise conv with elastic channels and kernel size (centre crop + optional OFA transform matrices)."""

    def __init__(self, channels: int, kernels: Sequence[int], stride: int = 1, transform: bool = True) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        k = self.kernels[-1]
        self.conv = nn.Conv2d(channels, channels, k, stride, k // 2, groups=channels, bias=False)
        self.transform = transform
        # One matrix per adjacent kernel pair, shared across channels (OFA's "7to5_matrix", "5to3_matrix").
        self.matrices = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small))
             for big, small in zip(self.kernels[::-1], self.kernels[-2::-1])}
            if transform else {}
        )
        self.active_kernel = k
        self.active_channels = channels
        self._derived = DerivedWeight()

    def set_active(self, channels: int, kernel: int) -> None:
        if kernel not in self.kernels:
            raise ValueError(f"kernel {kernel} not allowed; choose one of {list(self.kernels)}")
        if not 0 < channels <= self.conv.out_channels:
            raise ValueError(f"active channels {channels} not in [1, {self.conv.out_channels}]")
        self.active_channels, self.active_kernel = channels, kernel

    def active_weight(self) -> torch.Tensor:
        w, k, kmax = self.conv.weight[: self.active_channels], self.active_kernel, self.kernels[-1]
        if k == kmax:
            return w
        if not self.transform:
            return sub_kernel(w, k)
        c = w.size(0)
        return (w.reshape(c, kmax * kmax) @ self.kernel_map(k)).reshape(c, 1, k, k)

    def kernel_map(self, kernel: int) -> torch.Tensor:
        """The ``(kmax^2, kernel^2)`` matrix taking a flattened full kernel to the active transformed one.

        OFA's chain (K5 = centre5(W7) . M75, K3 = centre3(K5) . M53) folded into one matrix: a centre crop of
        ``A . M`` is ``A . M`` restricted to the crop's columns, so K3 = W7[:, c5] . M75[:, c3] . M53, and the
        outer crop becomes rows of a zero-padded matrix. One ``C x kmax^2`` product per forward instead of a
        crop-copy-multiply per step, and the weight gradient comes out dense (no scatter into a zero tensor).
        """
        kmax, acc = self.kernels[-1], None
        for big, small in zip(self.kernels[::-1], self.kernels[-2::-1]):
            if big <= kernel:
                break
            m = self.matrices[f"{big}to{small}"]
            acc = m if acc is None else acc[:, _centre_index(big, small, m.device)] @ m
        if acc is None:
            raise ValueError(f"kernel {kernel} is not smaller than the full kernel {kmax}; no map needed")
        rows = _centre_index(kmax, self.kernels[-2], acc.device)  # the first crop, kmax -> next smaller kernel
        return acc.new_zeros(kmax * kmax, acc.size(1)).index_copy(0, rows, acc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.active_kernel
        sources = (self.conv.weight, *self.matrices.values())
        w = self._derived.get((self.active_channels, k), sources, self.active_weight)
        return F.conv2d(x, w, None, self.conv.stride, k // 2, groups=x.size(1))

    def export(self) -> nn.Conv2d:
        k, c = self.active_kernel, self.active_channels
        out = nn.Conv2d(c, c, k, self.conv.stride, k // 2, groups=c, bias=False)
        with torch.no_grad():
            out.weight.copy_(self.active_weight())
        return out

    @torch.no_grad()
    def permute_out(self, perm: torch.Tensor) -> None:
        self.conv.weight.copy_(self.conv.weight[perm])


class ElasticBatchNorm2d(nn.Module):
    """BatchNorm over a channel prefix; running statistics of the prefix are shared by all widths.

    ``inplace=True`` (for a BN whose input is a temporary that only it reads, such as a conv output; the contract of
    ``nn.ReLU(inplace=True)``) normalises into the input when autograd is off: evaluation and BN recalibration then
    write no new activation (measured on the mid OFA subnet, batch 200: plain forward and recalibration both ~7%
    faster). Inputs under :attr:`INPLACE_MIN_NUMEL` elements, where the in-place call's few microseconds more of
    dispatch outweigh the write it saves (batch-1 inference), and every call with autograd on are out of place.
    """

    #: below this many elements a new output is cheaper than writing in place (measured: 2 us more at 2e5)
    INPLACE_MIN_NUMEL = 2**19

    def __init__(self, channels: int, *, inplace: bool = False) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.inplace = inplace
        self._derived = DerivedWeight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, c = self.bn, x.size(1)
        out = x if self.inplace and x.numel() >= self.INPLACE_MIN_NUMEL and not torch.is_grad_enabled() else None
        if not bn.training and bn.running_mean is not None and bn.running_var is not None and bn.affine:
            tensors = (bn.running_mean, bn.running_var, bn.weight, bn.bias)
            rm, rv, w, b = self._derived.get((c,), tensors, lambda: tuple(t[:c] for t in tensors))
            if out is None:  # the common batch-1 case: straight to torch, no wrapper
                return F.batch_norm(x, rm, rv, w, b, False, 0.0, bn.eps)
            return batch_norm(x, rm, rv, w, b, False, 0.0, bn.eps, out=out)
        if c == bn.num_features and out is None:
            return bn(x)
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        else:
            factor = 0.0
        use_batch = bn.training or bn.running_mean is None
        rm = bn.running_mean[:c] if bn.running_mean is not None else None
        rv = bn.running_var[:c] if bn.running_var is not None else None
        w, b = (None, None) if bn.weight is None or bn.bias is None else (bn.weight[:c], bn.bias[:c])
        return batch_norm(x, rm, rv, w, b, use_batch, factor, bn.eps, out=out)

    def export(self, channels: int) -> nn.BatchNorm2d:
        out = nn.BatchNorm2d(channels, eps=self.bn.eps, momentum=self.bn.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(out, name).copy_(getattr(self.bn, name)[:channels])
            out.num_batches_tracked.copy_(self.bn.num_batches_tracked)
        return out

    @torch.no_grad()
    def permute_out(self, perm: torch.Tensor) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(self.bn, name)
            t.copy_(t[perm])


class ElasticSE(nn.Module):
    """Squeeze-excite over a channel prefix; hidden width ``hidden_fn(channels)`` is a prefix of the full one."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = ElasticConv2d(channels, hidden, bias=True)
        self.expand = ElasticConv2d(hidden, channels, bias=True)

    def set_active(self, channels: int, hidden: int) -> None:
        self.reduce.set_active(hidden)
        self.expand.set_active(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(s))))

    def hidden_importance(self) -> torch.Tensor:
        """L1 norm of each hidden unit's outgoing weights."""
        return self.expand.conv.weight.abs().sum(dim=(0, 2, 3))

    @torch.no_grad()
    def permute_channels(self, perm: torch.Tensor) -> None:
        self.reduce.permute_in(perm)
        self.expand.permute_out(perm)

    @torch.no_grad()
    def permute_hidden(self, perm: torch.Tensor) -> None:
        self.reduce.permute_out(perm)
        self.expand.permute_in(perm)


class ElasticLinear(nn.Module):
    """Linear layer with elastic input and output features (prefix slices)."""

    def __init__(self, in_f: int, out_f: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_f, out_f, bias=bias)
        self.active_out = out_f

    def set_active(self, out_f: int) -> None:
        if not 0 < out_f <= self.linear.out_features:
            raise ValueError(f"active out features {out_f} not in [1, {self.linear.out_features}]")
        self.active_out = out_f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.linear.bias is None else self.linear.bias[: self.active_out]
        return F.linear(x, self.linear.weight[: self.active_out, : x.size(-1)], b)

    def export(self, in_f: int) -> nn.Linear:
        out = nn.Linear(in_f, self.active_out, bias=self.linear.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.linear.weight[: self.active_out, :in_f])
            if out.bias is not None:
                out.bias.copy_(self.linear.bias[: self.active_out])
        return out
