"""Training-mode batch norm without autograd (BN recalibration), with batch statistics from one pass on CPU.

Recalibrating a subnet's BN statistics runs every BatchNorm in training mode: normalise with the batch's own mean
and variance and fold them into the running averages. On CPU, torch's training-mode kernel makes two extra passes
over the input for those statistics (mean, then centred variance) and costs about twice its eval-mode kernel. Here,
for a contiguous NC... input, each (sample, channel) row yields its sum and sum of squares, the rows are combined
per channel in float64, and the input is normalised by the eval-mode kernel with those statistics (into ``out``
when the caller owns the input, see :class:`~supernets.ops.ElasticBatchNorm2d`). The running-average update is
torch's own: ``running = (1 - f) running + f batch`` with the unbiased batch variance.

Row sums and sums of squares of an input of at least :data:`FUSED_MIN_BYTES` come from one read, by a kernel that
``torch.compile`` (inductor, dynamic shapes) generates once per process: torch has no CPU op that returns both from
one pass (``var_mean``/``std_mean`` are Welford loops 20x slower, ``batch_norm_stats`` is CUDA-only). Measured on
the 49 BN inputs of the mid OFA subnet at batch 200 (2.6 GB): 123 ms against 207 ms for two reductions, and 104 ms
for a bare ``x.sum()`` of each, the least any statistics pass can cost; recalibration went from 1.16x to 1.13x a
plain forward in interleaved runs. Compiling costs 1-4 s once per process (inductor caches on disk across
processes). Where it cannot compile (no C++ compiler) it warns once and uses two reductions, reducing a large input
a few MiB of rows at a time so the second pass reads rows the first has just brought into cache (on a 32 MiB L3:
10.2 -> 8.3 ms on a 200x96x44x44 activation; rows shorter than :data:`CHUNK_MIN_ROW` gain nothing and are reduced
whole). :func:`use_fused_kernel` turns the compiled kernel off for the process; only a command's ``__main__`` calls it,
from the ``runtime`` config group's ``fused_bn_stats`` (no environment variable is read).

``E[x^2] - E[x]^2`` loses precision when a channel's mean is large against its spread; a layer with any channel
whose variance is under :data:`MIN_RELATIVE_VARIANCE` of its second moment falls back to torch's exact kernel, as
do other layouts, devices and autograd-enabled calls (the fast path is measured only on CPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["use_fused_kernel",
           "MIN_RELATIVE_VARIANCE", "CHUNK_BYTES", "CHUNK_MIN_ROW", "FUSED_MIN_BYTES", "FUSED_MAX_ROW",
           "batch_norm", "one_pass_moments", "row_moments"]

#: the one-pass variance is used only where var >= this x E[x^2] (relative error then ~1e-5 in float32)
MIN_RELATIVE_VARIANCE = 1e-2
#: rows are reduced in blocks of about this many bytes when the input exceeds four blocks
CHUNK_BYTES = 4 * 2**20
#: rows shorter than this (e.g. 11x11 feature maps) are reduced in one go
CHUNK_MIN_ROW = 256
#: inputs at least this large take the compiled one-read kernel (below it the call overhead outweighs the read)
FUSED_MIN_BYTES = 2**20
#: rows longer than this are cut into equal pieces no longer than it (inductor's row kernel is 2x slower on 7744)
FUSED_MAX_ROW = 4096

_fused: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
_fused_failed = False


def _sums_and_squares(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rows.sum(1), (rows * rows).sum(1)  # inductor fuses both reductions into one loop over each row


_use_fused = True


def use_fused_kernel(enabled: bool) -> None:
    """Turn the compiled one-read statistics kernel on or off for this process (the ``runtime`` config group's
    ``fused_bn_stats``, applied by each command's ``__main__``)."""
    global _use_fused
    _use_fused = bool(enabled)


def _fused_kernel() -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    global _fused
    if _fused_failed or not _use_fused:
        return None
    if _fused is None:
        _fused = torch.compile(_sums_and_squares, dynamic=True, fullgraph=True)
    return _fused


def _pieces(length: int) -> int:
    """The fewest equal pieces no longer than FUSED_MAX_ROW a row cuts into (1: none within 4x that count)."""
    least = -(-length // FUSED_MAX_ROW)
    return next((k for k in range(least, 4 * least + 1) if length % k == 0), 1)


def _fused_sums_and_squares(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    global _fused_failed
    kernel = _fused_kernel() if rows.numel() * rows.element_size() >= FUSED_MIN_BYTES else None
    if kernel is None:
        return None
    n_rows, length = rows.shape
    pieces = _pieces(length)
    try:
        sums, squares = kernel(rows.view(n_rows * pieces, length // pieces))
    except (RuntimeError, OSError) as err:  # inductor's compiler errors (no C++ toolchain, ...) are RuntimeErrors
        _fused_failed = True
        warnings.warn(f"BN statistics fall back to two reductions per row: torch.compile failed ({err})",
                      RuntimeWarning, stacklevel=2)
        return None
    return (sums, squares) if pieces == 1 else (sums.view(n_rows, pieces).sum(1), squares.view(n_rows, pieces).sum(1))


def _row_sums_and_squares_blocked(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n_rows, length = rows.shape
    row_bytes = length * rows.element_size()
    if length < CHUNK_MIN_ROW or n_rows * row_bytes <= 4 * CHUNK_BYTES:
        return rows.sum(1), torch.linalg.vector_norm(rows, dim=1).square_()
    step = max(1, CHUNK_BYTES // row_bytes)
    sums, norms = rows.new_empty(n_rows), rows.new_empty(n_rows)
    for i in range(0, n_rows, step):
        block = rows[i : i + step]
        torch.sum(block, 1, out=sums[i : i + step])
        torch.linalg.vector_norm(block, dim=1, out=norms[i : i + step])
    return sums, norms.square_()


def row_moments(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and sum of squares of each row of a contiguous 2-D CPU tensor, in one read where it can compile."""
    fused = _fused_sums_and_squares(rows)
    return fused if fused is not None else _row_sums_and_squares_blocked(rows)


def one_pass_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """Per-channel mean and biased variance of ``x`` (N, C, ...) and the count per channel; ``None`` if unsuited."""
    if x.device.type != "cpu" or x.dim() < 2 or not x.is_contiguous() or not x.is_floating_point():
        return None
    c = x.size(1)
    count = x.numel() // max(c, 1)
    if count < 2:
        return None
    sums, squares = row_moments(x.reshape(x.size(0) * c, -1))
    total = sums.double().view(-1, c).sum(0)
    squares = squares.double().view(-1, c).sum(0)
    mean, second = total / count, squares / count
    var = second - mean.square()
    if bool((var < MIN_RELATIVE_VARIANCE * second).any()):
        return None
    return mean.to(x.dtype), var.to(x.dtype), count


def _normalise(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None,
               bias: torch.Tensor | None, eps: float, out: torch.Tensor | None) -> torch.Tensor:
    # In place only on CPU, where it was measured to pay: CUDA's eval-mode kernel may write the statistics it uses
    # into save_mean/save_invstd, so those must never alias each other (or the input).
    if out is None or x.device.type != "cpu":
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
    torch.ops.aten.native_batch_norm.out(x, weight, bias, mean, var, False, 0.0, eps, out=out,
                                         save_mean=x.new_empty(0), save_invstd=x.new_empty(0))
    return out


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None, bias: torch.Tensor | None, training: bool, factor: float,
               eps: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``F.batch_norm`` with the same arguments; training mode without autograd takes the one-pass statistics.

    ``out`` (``x`` itself for an in-place op) receives the result when autograd is off and running statistics are
    given; otherwise it is left alone and the result is a new tensor. Use the returned tensor either way.
    """
    if torch.is_grad_enabled() or running_mean is None or running_var is None:
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, factor, eps)
    if not training:
        return _normalise(x, running_mean, running_var, weight, bias, eps, out)
    moments = one_pass_moments(x)
    if moments is None:
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, factor, eps)
    mean, var, count = moments
    running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
    running_var.mul_(1.0 - factor).add_(var * (count / (count - 1)), alpha=factor)
    return _normalise(x, mean, var, weight, bias, eps, out)
