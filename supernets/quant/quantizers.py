"""LSQ-style learned quantisers with one step/offset table entry per bit-width (EQ-Net, Xu et al., ICCV 2023).

Fake quantisation follows the paper's Eq. 1 with an integer zero point ``z`` (learned as a float, rounded with a
straight-through estimator, as in LSQ+ and torch's learnable fake-quant) so that every configuration is exactly
representable by an integer kernel::

    q = round(clamp(x / s + round(z), Q_N, Q_P)),   x_hat = s * (q - round(z))

Gradients are LSQ's: for ``s`` ``round(v) - v`` inside the range and ``Q_P - z`` / ``Q_N - z`` outside, scaled by
``g = 1 / sqrt(Q_P * n)`` with ``n`` the elements sharing one step (``numel`` per tensor, ``numel / C_out`` per
output channel). Two defects of the reference code are corrected here: the gradient-scale helper returns its input
unchanged in the forward pass (the reference returns ``|x|``, which turns a negative offset positive), and the
per-channel gradient scale counts ``numel / C_out`` elements per step (the reference divides by ``size(1)``).

Integer ranges: weights signed ``[-2^(b-1), 2^(b-1)-1]``; activations signed, or unsigned ``[0, 2^b-1]`` when the
calibration batch is non-negative (after ReLU). Symmetric quantisers have no offset. Initialisation searches the
clipping range that minimises the L_p error (p = 2.4, LAPQ) on a calibration tensor, separately for every
bit-width, granularity and symmetry: ranges ``max * (1 - 0.01 i)``, ``i < steps``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from search_spaces.registry import Registry

__all__ = [
    "BITS", "EPS", "grad_scale", "round_ste", "int_range", "quantize_dequantize", "fake_quant", "lp_init",
    "WeightQuantizer", "ActQuantizer", "WeightQuantizerFamily", "WEIGHT_QUANTIZERS",
]

BITS = tuple(range(2, 9))
EPS = 1e-8


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Forward: ``x`` unchanged (sign kept). Backward: gradient multiplied by ``g``."""
    y = x * g
    return (x - y).detach() + y


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.round()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (half to even) with a straight-through gradient. The value is exactly ``x.round()``
    (``x + (round(x) - x).detach()`` can land a hair above the range limit and lose the gradient there)."""
    return _RoundSTE.apply(x)


def int_range(bits: int, signed: bool = True) -> tuple[int, int]:
    if bits not in BITS:
        raise ValueError(f"bits={bits} not supported; choose one of {list(BITS)}")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    """``scale * (round(clamp(x / scale + zero, qn, qp)) - zero)`` with a straight-through round (LSQ's order:
    an input is "inside" the range, and passes its gradient, when ``qn <= x / scale + zero <= qp``).

    ``scale`` > 0 and integer-valued ``zero`` broadcast against ``x`` (per-channel: shape ``(C, 1, ...)``).
    """
    return scale * (round_ste(torch.clamp(x / scale + zero, qn, qp)) - zero)


def effective_params(scale: torch.Tensor, zero: torch.Tensor | None, qn: int, qp: int,
                     g: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Step size (positive) and integer zero point actually used, with LSQ gradient scaling applied."""
    s = grad_scale(scale, g).abs() + EPS
    if zero is None:
        return s, torch.zeros_like(s)
    return s, torch.clamp(round_ste(grad_scale(zero, g)), qn, qp)


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, qn: int, qp: int,
               g: float = 1.0) -> torch.Tensor:
    """LSQ fake quantisation of ``x`` with learnable ``scale`` and optional offset ``zero`` (in integer units)."""
    s, z = effective_params(scale, zero, qn, qp, g)
    return quantize_dequantize(x, s, z, qn, qp)


@torch.no_grad()
def lp_init(rows: torch.Tensor, qn: int, qp: int, symmetric: bool, *, p: float = 2.4,
            steps: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (scale, zero) minimising ``mean |x - q(x)|^p`` over shrunk clipping ranges (``rows``: ``(R, n)``).

    Symmetric: range ``[-m, m]`` (``[0, m]`` when unsigned), ``m = max|x| (1 - 0.01 i)``. Asymmetric:
    ``[min, max] (1 - 0.01 i)`` with the zero point rounded to an integer.
    """
    rows = rows.float()
    s, z = shrunk_ranges(rows, qn, qp, symmetric, steps)
    err = (rows - s * (torch.clamp(torch.round(rows / s + z), qn, qp) - z)).abs_().pow_(p).mean(2)  # (steps, R)
    return pick_best(s, z, err)


def shrunk_ranges(rows: torch.Tensor, qn: int, qp: int, symmetric: bool,
                  steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate (scale, zero) per row, shape ``(steps, R, 1)``: the row's range shrunk by 1 % per step.

    Symmetric: ``[-m, m]`` (``[0, m]`` when unsigned, ``qn == 0``); asymmetric: ``[min, max]`` with the zero point
    rounded to an integer in ``[qn, qp]``.
    """
    unsigned = qn == 0
    if symmetric:
        hi = rows.amax(1) if unsigned else rows.abs().amax(1)
        lo = torch.zeros_like(hi) if unsigned else -hi
    else:
        hi, lo = rows.amax(1).clamp_min(0), rows.amin(1).clamp_max(0)
    shrink = 1.0 - 0.01 * torch.arange(steps, dtype=rows.dtype, device=rows.device)[:, None]  # (steps, 1)
    s = ((hi - lo)[None] * shrink / (qp - qn)).clamp_min(EPS)[..., None]  # (steps, R, 1)
    z = torch.zeros_like(s) if symmetric else torch.clamp(torch.round(qn - lo[None, :, None] * shrink[..., None] / s),
                                                          qn, qp)
    return s, z


def pick_best(s: torch.Tensor, z: torch.Tensor, err: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the candidate of :func:`shrunk_ranges` with the least ``err`` (``(steps, R)``; the widest wins ties)."""
    best = err.argmin(0)
    cols = torch.arange(s.size(1), device=s.device)
    return s[best, cols, 0], z[best, cols, 0]


def _subsample(x: torch.Tensor, max_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    flat = x.detach().reshape(-1)
    if flat.numel() <= max_samples:
        return flat
    idx = torch.randperm(flat.numel(), generator=generator, device="cpu")[:max_samples].to(flat.device)
    return flat[idx]


class WeightQuantizerFamily(Protocol):
    """What a quantised layer needs from its weight quantiser (an ``nn.Module``; one per layer, built by a factory
    of :data:`WEIGHT_QUANTIZERS` from the layer's output channels)."""

    initialized: torch.Tensor

    def __call__(self, w: torch.Tensor, bits: int, per_channel: bool, symmetric: bool) -> torch.Tensor:
        """Fake-quantised ``w`` (differentiable in ``w`` and the quantiser's parameters)."""

    def effective(self, bits: int, per_channel: bool, symmetric: bool,
                  channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached (step, integer zero point) of a configuration, for export."""

    def export_weight(self, w: torch.Tensor, bits: int, per_channel: bool,
                      symmetric: bool) -> torch.Tensor | None:
        """The weight an export stores (``None``: the latent weight, quantised by the exported layer)."""

    def calibrate(self, weight: torch.Tensor, *, p: float = 2.4, steps: int = 80, max_samples: int = 1 << 14,
                  generator: torch.Generator | None = None) -> None: ...

    def permute_channels(self, perm: torch.Tensor) -> None: ...


#: Weight quantiser families of the quantised supernet (``supernet.kwargs.quantizer``): name -> factory(channels).
WEIGHT_QUANTIZERS: Registry[nn.Module] = Registry("weight quantizer")


class WeightQuantizer(nn.Module):
    """Step/offset tables of one weight tensor: per-tensor ``(sym|asym, bits)`` and per-channel
    ``(sym|asym, C_out, bits)`` steps; offsets for asymmetric only (symmetric offsets are 0, not stored)."""

    initialized: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        n = len(BITS)
        self.scale_tensor = nn.Parameter(torch.ones(2, n))
        self.zero_tensor = nn.Parameter(torch.zeros(n))
        self.scale_channel = nn.Parameter(torch.ones(2, channels, n))
        self.zero_channel = nn.Parameter(torch.zeros(channels, n))
        self.register_buffer("initialized", torch.tensor(False))

    def params(self, bits: int, per_channel: bool, symmetric: bool,
               channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw (learnable) step and offset for a configuration; per-channel tables sliced to ``channels``."""
        b, k = bits - BITS[0], 0 if symmetric else 1
        if per_channel:
            return self.scale_channel[k, :channels, b], None if symmetric else self.zero_channel[:channels, b]
        return self.scale_tensor[k, b], None if symmetric else self.zero_tensor[b]

    def forward(self, w: torch.Tensor, bits: int, per_channel: bool, symmetric: bool) -> torch.Tensor:
        qn, qp = int_range(bits)
        c = w.size(0)
        scale, zero = self.params(bits, per_channel, symmetric, c)
        g = (qp * w.numel() / (c if per_channel else 1)) ** -0.5
        if per_channel:
            shape = (-1,) + (1,) * (w.dim() - 1)
            scale, zero = scale.reshape(shape), None if zero is None else zero.reshape(shape)
        return fake_quant(w, scale, zero, qn, qp, g)

    def effective(self, bits: int, per_channel: bool, symmetric: bool,
                  channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached (step, integer zero point) as used in the forward pass (for export)."""
        qn, qp = int_range(bits)
        scale, zero = self.params(bits, per_channel, symmetric, channels)
        with torch.no_grad():
            return effective_params(scale, zero, qn, qp, 1.0)

    def export_weight(self, w: torch.Tensor, bits: int, per_channel: bool, symmetric: bool) -> None:
        """``None``: an export stores the latent weight and quantises it with :meth:`effective`'s parameters."""
        return None

    @torch.no_grad()
    def calibrate(self, weight: torch.Tensor, *, p: float = 2.4, steps: int = 80, max_samples: int = 1 << 14,
                  generator: torch.Generator | None = None) -> None:
        """Initialise every table entry from the full latent weight tensor (per-tensor search on at most
        ``max_samples`` values)."""
        rows = weight.detach().reshape(weight.size(0), -1)
        flat = _subsample(rows, max_samples, generator).reshape(1, -1)
        for b in BITS:
            qn, qp = int_range(b)
            for k, sym in enumerate((True, False)):
                s, z = lp_init(rows, qn, qp, sym, p=p, steps=steps)
                self.scale_channel[k, :, b - BITS[0]] = s
                if not sym:
                    self.zero_channel[:, b - BITS[0]] = z
                s, z = lp_init(flat, qn, qp, sym, p=p, steps=steps)
                self.scale_tensor[k, b - BITS[0]] = s[0]
                if not sym:
                    self.zero_tensor[b - BITS[0]] = z[0]
        self.initialized.fill_(True)

    @torch.no_grad()
    def permute_channels(self, perm: torch.Tensor) -> None:
        """Follow a permutation of the output channels (elastic-width channel sorting)."""
        self.scale_channel.copy_(self.scale_channel[:, perm])
        self.zero_channel.copy_(self.zero_channel[perm])


@WEIGHT_QUANTIZERS.register("eqnet")
def eqnet(channels: int) -> WeightQuantizer:
    """EQ-Net: independent LSQ step/offset tables per bit-width over the shared latent float weights."""
    return WeightQuantizer(channels)


class ActQuantizer(nn.Module):
    """Per-tensor activation step/offset tables ``(sym|asym, bits)``; unsigned range when calibrated on
    non-negative inputs."""

    unsigned: torch.Tensor
    initialized: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        n = len(BITS)
        self.scale = nn.Parameter(torch.ones(2, n))
        self.zero = nn.Parameter(torch.zeros(n))
        self.register_buffer("unsigned", torch.tensor(False))
        self.register_buffer("initialized", torch.tensor(False))

    def range(self, bits: int) -> tuple[int, int]:
        return int_range(bits, signed=not bool(self.unsigned))

    def forward(self, x: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
        qn, qp = self.range(bits)
        b = bits - BITS[0]
        zero = None if symmetric else self.zero[b]
        return fake_quant(x, self.scale[0 if symmetric else 1, b], zero, qn, qp, (qp * x.numel()) ** -0.5)

    def effective(self, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
        qn, qp = self.range(bits)
        b = bits - BITS[0]
        with torch.no_grad():
            return effective_params(self.scale[0 if symmetric else 1, b], None if symmetric else self.zero[b],
                                    qn, qp, 1.0)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, *, p: float = 2.4, steps: int = 80, max_samples: int = 1 << 14,
                  generator: torch.Generator | None = None) -> None:
        """Initialise every table entry from a calibration activation (subsampled to ``max_samples`` values)."""
        self.unsigned.fill_(bool(x.min() >= -1e-9))
        rows = _subsample(x, max_samples, generator).reshape(1, -1)
        for b in BITS:
            qn, qp = self.range(b)
            for k, sym in enumerate((True, False)):
                s, z = lp_init(rows, qn, qp, sym, p=p, steps=steps)
                self.scale[k, b - BITS[0]] = s[0]
                if not sym:
                    self.zero[b - BITS[0]] = z[0]
        self.initialized.fill_(True)
