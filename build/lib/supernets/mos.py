"""Mixture-of-Supernets layers (Jawahar et al., ACL Findings 2024): architecture-routed expert weights.

Plain weight sharing gives a subnet the slice ``W_max[:out, :in]`` of one shared matrix. A MoS layer instead
holds ``m`` expert matrices ``E_1..E_m`` and a router MLP ``alpha = softmax(W2 relu(W1 enc(a)))`` from the
architecture encoding ``enc(a)`` (computed by the supernet in ``set_arch``, never by the caller) to mixing
weights, and *generates* the subnet's weight:

- layer-wise: one alpha in the simplex per layer, ``W(a) = sum_i alpha_i E_i[:out, :in]``, ``b(a)`` likewise;
- neuron-wise: the router emits ``out_max * m`` logits laid out as (out_max, m); the first ``out(a)`` rows are
  soft-maxed over ``m`` so each output neuron has its own mixture, ``W(a)[j] = sum_i alpha_ji E_i[j, :in]``.

Experts are initialised independently (identical experts with a symmetric router would stay identical forever:
the router's gradient vanishes when all experts agree). ``export`` materialises ``W(a)`` once as a plain
``nn.Linear``: no router at inference. :meth:`MoSLinear.load_from_linear` copies a plain weight into every
expert, which makes the layer compute exactly what plain weight sharing computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MOS_MODES", "MoSRouter", "MoSLinear", "set_mos_encoding", "mos_layers"]

MOS_MODES = ("layer", "neuron")


class MoSRouter(nn.Module):
    """``enc -> Linear -> ReLU -> Linear`` producing mixing logits."""

    def __init__(self, enc_dim: int, n_logits: int, hidden: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(enc_dim, hidden)
        self.fc2 = nn.Linear(hidden, n_logits)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(enc)))


class MoSLinear(nn.Module):
    """A drop-in for :class:`supernets.ops.ElasticLinear` whose active weight is a routed mixture of experts."""

    encoding: torch.Tensor

    def __init__(self, in_f: int, out_f: int, *, experts: int = 2, mode: str = "layer", enc_dim: int,
                 router_hidden: int = 128, bias: bool = True, init_std: float | None = None) -> None:
        super().__init__()
        if mode not in MOS_MODES:
            raise ValueError(f"MoS mode {mode!r} not allowed; choose one of {list(MOS_MODES)}")
        if experts < 1:
            raise ValueError(f"MoS needs at least one expert, got experts={experts}")
        self.in_features, self.out_features, self.mode, self.n_experts = in_f, out_f, mode, experts
        self.weight = nn.Parameter(torch.empty(experts, out_f, in_f))
        self.bias = nn.Parameter(torch.zeros(experts, out_f)) if bias else None
        self.router = MoSRouter(enc_dim, experts if mode == "layer" else experts * out_f, router_hidden)
        self.register_buffer("encoding", torch.zeros(enc_dim), persistent=False)
        self.active_out = out_f
        self.reset_parameters(init_std)

    def reset_parameters(self, init_std: float | None = None) -> None:
        with torch.no_grad():
            for e in range(self.n_experts):
                if init_std is None:  # nn.Linear's default, per expert
                    nn.init.kaiming_uniform_(self.weight[e], a=math.sqrt(5))
                else:
                    nn.init.trunc_normal_(self.weight[e], std=init_std)
            if self.bias is not None:
                self.bias.zero_()

    # -- configuration (called from the supernet's set_arch) --------------------------------------
    def set_active(self, out_f: int) -> None:
        if not 0 < out_f <= self.out_features:
            raise ValueError(f"active out features {out_f} not in [1, {self.out_features}]")
        self.active_out = out_f

    @torch.no_grad()
    def set_encoding(self, enc: torch.Tensor) -> None:
        if enc.shape != self.encoding.shape:
            raise ValueError(f"architecture encoding must have shape {tuple(self.encoding.shape)}, "
                             f"got {tuple(enc.shape)}")
        self.encoding.copy_(enc)

    # -- computation ------------------------------------------------------------------------------
    def mixture(self) -> torch.Tensor:
        """Mixing weights: shape (m,) layer-wise, (active_out, m) neuron-wise; each row sums to one."""
        logits = self.router(self.encoding)
        if self.mode == "layer":
            return logits.softmax(-1)
        return logits.reshape(self.out_features, self.n_experts)[: self.active_out].softmax(-1)

    def active_weight(self, in_f: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        alpha, out = self.mixture(), self.active_out
        experts = self.weight[:, :out, :in_f]
        eq = "m,moi->oi" if self.mode == "layer" else "om,moi->oi"
        w = torch.einsum(eq, alpha, experts)
        if self.bias is None:
            return w, None
        b = alpha @ self.bias[:, :out] if self.mode == "layer" else (alpha * self.bias[:, :out].T).sum(-1)
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.active_weight(x.size(-1))
        return F.linear(x, w, b)

    def export(self, in_f: int) -> nn.Linear:
        """The mixed weight of the active architecture, computed once, as a plain dense layer."""
        out = nn.Linear(in_f, self.active_out, bias=self.bias is not None)
        with torch.no_grad():
            w, b = self.active_weight(in_f)
            out.weight.copy_(w)
            if b is not None:
                out.bias.copy_(b)
        return out

    @torch.no_grad()
    def load_from_linear(self, linear: nn.Linear) -> None:
        """Copy one plain full-size weight (and bias) into every expert."""
        if linear.weight.shape != self.weight.shape[1:]:
            raise ValueError(f"linear weight {tuple(linear.weight.shape)} does not fit experts of shape "
                             f"{tuple(self.weight.shape[1:])}")
        self.weight.copy_(linear.weight.unsqueeze(0).expand_as(self.weight))
        if self.bias is not None and linear.bias is not None:
            self.bias.copy_(linear.bias.unsqueeze(0).expand_as(self.bias))


def mos_layers(module: nn.Module) -> list[MoSLinear]:
    return [m for m in module.modules() if isinstance(m, MoSLinear)]


def set_mos_encoding(layers: Iterable[MoSLinear], enc: torch.Tensor) -> None:
    """Give every MoS layer the active architecture's encoding (the supernet calls this in ``set_arch``)."""
    for layer in layers:
        layer.set_encoding(enc)
