"""Double Rounding weight quantiser with adaptive learning-rate scaling (Huang et al., "Nearly Lossless Adaptive
Bit Switching", arXiv 2502.01199), a second quantiser family of the elastic-quantisation supernet.

One learnable step ``s`` (per tensor or per output channel, symmetric or with an integer offset ``z8``) belongs to
the highest bit-width ``B = 8``. The model that is stored is the 8-bit integer code plus that step::

    q8 = clamp(round(w / s) + z8, -128, 127)

and every lower bit-width ``b`` is a *rounding shift* of it (``k = B - b``; integer kernels compute
``(q + 2^(k-1)) >> k``), so one integer copy serves all bits::

    qb = clamp((q8 + 2^(k-1)) >> k, -2^(b-1), 2^(b-1) - 1),   zb = (z8 + 2^(k-1)) >> k,   w_b = s 2^k (qb - zb)

Training passes gradients straight through both roundings (the step gets LSQ's gradient at the 8-bit grid, scaled
by ``1 / sqrt(127 n)``). Because the step is shared, each precision pulls on it: in range the gradient of ``s`` at
``b`` bits is the rounding error in units of ``s``, about ``2^k`` times that at 8 bits, and the low precisions
dominate the summed update. That is the interference the paper's ALRS (adaptive learning-rate scaling) removes.
Here each precision's contribution to the step's gradient is multiplied by

    lambda_b = clamp(m_B / m_b, 2^-k, 1)

with ``m_b`` a running mean (momentum ``alrs_momentum``) of the magnitude of the raw step gradient that precision
``b`` produced (kept per granularity, as buffers, so a resumed run continues with the same factors): each precision
updates the shared step at the rate of the highest one, never slower than the shift ratio ``2^-k``. The paper's own
formula was not available to us (its code was not released when this was written); this follows its description:
per-precision learning rates for the quantisation scales only. Activations keep EQ-Net's per-bit step tables
(activations are not stored, so nothing needs sharing and nothing interferes).

Initialisation: the step minimising the mean L_p error (p = 2.4) of the double-rounded weights over
:data:`INIT_BITS`, among clipping ranges ``max * (1 - 0.01 i)``, ``i < steps``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from supernets.quant.quantizers import (
    BITS,
    EPS,
    WEIGHT_QUANTIZERS,
    _subsample,
    grad_scale,
    int_range,
    pick_best,
    round_ste,
    shrunk_ranges,
)

__all__ = ["TOP_BITS", "INIT_BITS", "DoubleRoundingQuantizer", "round_shift", "switch_bits", "double_round"]

TOP_BITS = BITS[-1]
INIT_BITS = (8, 6, 4)


class _FloorHalfSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad


def round_shift(q: torch.Tensor, k: int) -> torch.Tensor:
    """``(q + 2^(k-1)) >> k`` on integer-valued float tensors (round half up), straight-through gradient."""
    return q if k == 0 else _FloorHalfSTE.apply(q / 2**k)


def switch_bits(q8: torch.Tensor, z8: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``bits``-bit integer code and zero point derived from the stored 8-bit ones by integer rounding shifts
    (what a deployment kernel computes; no floating point)."""
    qn, qp = int_range(bits)
    k = TOP_BITS - bits
    if k == 0:
        return q8.to(torch.int32), z8.to(torch.int32)
    half = 1 << (k - 1)
    qb = ((q8.to(torch.int32) + half) >> k).clamp(qn, qp)
    return qb, (z8.to(torch.int32) + half) >> k


def double_round(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """``s 2^k (qb - zb)`` (see the module docstring); ``scale`` > 0 and integer ``zero`` broadcast against ``w``."""
    qn8, qp8 = int_range(TOP_BITS)
    qn, qp = int_range(bits)
    k = TOP_BITS - bits
    q8 = round_ste(torch.clamp(w / scale + zero, qn8, qp8))
    return scale * 2**k * (torch.clamp(round_shift(q8, k), qn, qp) - round_shift(zero, k))


class DoubleRoundingQuantizer(nn.Module):
    """One 8-bit step per (granularity, symmetry) shared by every bit-width; ALRS on its gradient per precision.

    Tables: per-tensor steps ``(sym|asym,)``, per-channel ``(sym|asym, C_out)``; offsets for asymmetric only.
    Buffer ``grad_mag`` ``(per_tensor|per_channel, bits)``: running step-gradient magnitude of each precision.
    """

    initialized: torch.Tensor
    grad_mag: torch.Tensor

    def __init__(self, channels: int, *, alrs: bool = True, alrs_momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= alrs_momentum < 1.0:
            raise ValueError(f"alrs_momentum must be in [0, 1), got {alrs_momentum}")
        self.scale_tensor = nn.Parameter(torch.ones(2))
        self.zero_tensor = nn.Parameter(torch.zeros(()))
        self.scale_channel = nn.Parameter(torch.ones(2, channels))
        self.zero_channel = nn.Parameter(torch.zeros(channels))
        self.alrs, self.alrs_momentum = alrs, alrs_momentum
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("grad_mag", torch.zeros(2, len(BITS)))

    def params(self, per_channel: bool, symmetric: bool, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = 0 if symmetric else 1
        if per_channel:
            return self.scale_channel[k, :channels], None if symmetric else self.zero_channel[:channels]
        return self.scale_tensor[k], None if symmetric else self.zero_tensor

    def alrs_factor(self, bits: int, per_channel: bool) -> float:
        """``lambda_b`` (1 without ALRS or before both precisions were seen)."""
        mags = self.grad_mag[int(per_channel)]
        top, mine = float(mags[-1]), float(mags[bits - BITS[0]])
        if not self.alrs or top <= 0.0 or mine <= 0.0:
            return 1.0
        return min(1.0, max(2.0 ** (bits - TOP_BITS), top / mine))

    def _record(self, bits: int, per_channel: bool) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            mag = self.grad_mag[int(per_channel), bits - BITS[0]]
            value = grad.detach().abs().mean()
            mag.copy_(torch.where(mag > 0, self.alrs_momentum * mag + (1 - self.alrs_momentum) * value, value))
        return hook

    def _effective(self, per_channel: bool, symmetric: bool, channels: int, g: float,
                   shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        qn, qp = int_range(TOP_BITS)
        scale, zero = self.params(per_channel, symmetric, channels)
        s = grad_scale(scale, g).abs().reshape(shape) + EPS
        if zero is None:
            return s, torch.zeros_like(s)
        return s, torch.clamp(round_ste(grad_scale(zero, g)), qn, qp).reshape(shape)

    def forward(self, w: torch.Tensor, bits: int, per_channel: bool, symmetric: bool) -> torch.Tensor:
        c = w.size(0)
        shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else ()
        lam = self.alrs_factor(bits, per_channel)
        g = lam * (int_range(TOP_BITS)[1] * w.numel() / (c if per_channel else 1)) ** -0.5
        s, z = self._effective(per_channel, symmetric, c, g, shape)
        if self.alrs and self.training and s.requires_grad:
            s.register_hook(self._record(bits, per_channel))  # dL/ds: before the factors above scale it
        return double_round(w, s, z, bits)

    @torch.no_grad()
    def integer_weights(self, w: torch.Tensor, per_channel: bool,
                        symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored form: (int8 code of ``w``, 8-bit step, integer zero point), broadcastable against ``w``."""
        shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else ()
        s, z = self._effective(per_channel, symmetric, w.size(0), 1.0, shape)
        qn, qp = int_range(TOP_BITS)
        return torch.clamp(torch.round(w / s + z), qn, qp).to(torch.int8), s, z.to(torch.int8)

    def effective(self, bits: int, per_channel: bool, symmetric: bool,
                  channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(step ``s 2^k``, zero point ``zb``) of the ``bits``-bit grid (for export)."""
        with torch.no_grad():
            s, z = self._effective(per_channel, symmetric, channels, 1.0, (-1,) if per_channel else ())
            k = TOP_BITS - bits
            return s * 2**k, torch.floor(z / 2**k + 0.5)

    @torch.no_grad()
    def export_weight(self, w: torch.Tensor, bits: int, per_channel: bool, symmetric: bool) -> torch.Tensor:
        """The double-rounded weight (on the grid of :meth:`effective`, so re-quantising it is exact)."""
        shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else ()
        s, z = self._effective(per_channel, symmetric, w.size(0), 1.0, shape)
        return double_round(w, s, z, bits)

    @torch.no_grad()
    def calibrate(self, weight: torch.Tensor, *, p: float = 2.4, steps: int = 80, max_samples: int = 1 << 14,
                  generator: torch.Generator | None = None) -> None:
        """Initialise the steps (and offsets) from the latent weights: see :func:`dr_lp_init`."""
        rows = weight.detach().reshape(weight.size(0), -1)
        flat = _subsample(rows, max_samples, generator).reshape(1, -1)
        for k, sym in enumerate((True, False)):
            s, z = dr_lp_init(rows, sym, p=p, steps=steps)
            self.scale_channel[k] = s
            if not sym:
                self.zero_channel.copy_(z)
            s, z = dr_lp_init(flat, sym, p=p, steps=steps)
            self.scale_tensor[k] = s[0]
            if not sym:
                self.zero_tensor.copy_(z[0])
        self.grad_mag.zero_()
        self.initialized.fill_(True)

    @torch.no_grad()
    def permute_channels(self, perm: torch.Tensor) -> None:
        self.scale_channel.copy_(self.scale_channel[:, perm])
        self.zero_channel.copy_(self.zero_channel[perm])


@torch.no_grad()
def dr_lp_init(rows: torch.Tensor, symmetric: bool, *, p: float = 2.4, steps: int = 80,
               bits: tuple[int, ...] = INIT_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row 8-bit (step, zero) minimising the L_p error of the double-rounded rows averaged over ``bits``."""
    rows = rows.float()
    qn, qp = int_range(TOP_BITS)
    s, z = shrunk_ranges(rows, qn, qp, symmetric, steps)
    err = sum((rows - double_round(rows, s, z, b)).abs_().pow_(p).mean(2) for b in bits)  # (steps, R)
    return pick_best(s, z, err)  # type: ignore[arg-type]


@WEIGHT_QUANTIZERS.register("double_rounding")
def double_rounding(channels: int, *, alrs: bool = True, alrs_momentum: float = 0.9) -> DoubleRoundingQuantizer:
    """Double Rounding: one 8-bit integer copy, lower bits by rounding shifts; ALRS on the shared steps."""
    return DoubleRoundingQuantizer(channels, alrs=alrs, alrs_momentum=alrs_momentum)
