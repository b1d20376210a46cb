"""Fake-quant export of a quantised subnet as a static module that needs no supernet code.

The exported float subnet (the wrapped supernet's own ``export``) gets each conv / linear replaced, in call order,
by a :class:`FakeQuantLayer` holding the effective step sizes and integer zero points the supernet used for that
layer. The JSON config (``{"type": "fake_quant", "base": <float config>, "input_shape": ..., "layers": [...]}``)
rebuilds it through :data:`supernets.static.STATIC_BUILDERS`, so :func:`supernets.export.save_subnet` /
``load_subnet`` work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from search_spaces.quant import LayerQuant
from supernets.quant.ops import adapter_for
from supernets.quant.quantizers import int_range, quantize_dequantize
from supernets.static import STATIC_BUILDERS, build_from_config

__all__ = ["FakeQuantLayer", "wrap_in_call_order", "fake_quant_config", "call_order"]


class FakeQuantLayer(nn.Module):
    """A plain conv / linear ``op`` with fixed weight and input fake quantisation (buffers hold the parameters)."""

    op: nn.Conv2d | nn.Linear
    w_scale: torch.Tensor
    w_zero: torch.Tensor
    a_scale: torch.Tensor
    a_zero: torch.Tensor

    def __init__(self, op: nn.Module, config: LayerQuant, unsigned: bool) -> None:
        super().__init__()
        adapter = adapter_for(op)
        if adapter is None or not isinstance(op, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"FakeQuantLayer wraps nn.Conv2d or nn.Linear, got {type(op).__name__}")
        self.op, self.adapter, self.config, self.unsigned = op, adapter, config, unsigned
        n = op.weight.size(0) if config.per_channel else 1
        self.register_buffer("w_scale", torch.ones(n))
        self.register_buffer("w_zero", torch.zeros(n))
        self.register_buffer("a_scale", torch.tensor(1.0))
        self.register_buffer("a_zero", torch.tensor(0.0))

    @torch.no_grad()
    def load_params(self, *, w_scale: torch.Tensor, w_zero: torch.Tensor, a_scale: torch.Tensor,
                    a_zero: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Quantisation parameters; ``weight`` (if given) replaces the op's weight (e.g. already on the grid)."""
        if weight is not None:
            self.op.weight.copy_(weight)
        for name, value in (("w_scale", w_scale), ("w_zero", w_zero), ("a_scale", a_scale), ("a_zero", a_zero)):
            getattr(self, name).copy_(value.reshape(getattr(self, name).shape))

    @property
    def w_range(self) -> tuple[int, int]:
        return int_range(self.config.w_bits)

    @property
    def a_range(self) -> tuple[int, int]:
        return int_range(self.config.a_bits, signed=not self.unsigned)

    def quantized_weight(self) -> torch.Tensor:
        w = self.op.weight
        shape = (-1,) + (1,) * (w.dim() - 1)
        return quantize_dequantize(w, self.w_scale.reshape(shape), self.w_zero.reshape(shape), *self.w_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = quantize_dequantize(x, self.a_scale, self.a_zero, *self.a_range)
        return self.adapter.compute(self.op, x, self.quantized_weight())


def call_order(module: nn.Module, input_shape: Sequence[int]) -> list[nn.Module]:
    """Conv / linear modules of ``module`` in the order one eval-mode forward calls them (each at most once)."""
    calls: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: calls.append(m))
             for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(*input_shape, device=next(module.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    if len(set(map(id, calls))) != len(calls):
        raise ValueError("a conv/linear module is called more than once per forward; per-layer quantisation "
                         "needs one module per call")
    return calls


def wrap_in_call_order(module: nn.Module, input_shape: Sequence[int],
                       make: Callable[[int, nn.Module], nn.Module]) -> nn.Module:
    """Replace (in place) the i-th called conv / linear ``op`` of ``module`` by ``make(i, op)``; returns ``module``."""
    order = {id(m): i for i, m in enumerate(call_order(module, input_shape))}
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in order:
                setattr(parent, name, make(order[id(child)], child))
    return module


def fake_quant_config(base: dict[str, Any], input_shape: Sequence[int], configs: Sequence[LayerQuant],
                      unsigned: Sequence[bool]) -> dict[str, Any]:
    return {"type": "fake_quant", "base": base, "input_shape": list(input_shape),
            "layers": [{"quant": c.token, "unsigned": bool(u)} for c, u in zip(configs, unsigned)]}


@STATIC_BUILDERS.register("fake_quant")
def _build_fake_quant(base: dict[str, Any], input_shape: Sequence[int], layers: Sequence[dict[str, Any]]) -> nn.Module:
    module = build_from_config(base)
    n = len(call_order(module, input_shape))
    if n != len(layers):
        raise ValueError(f"the base network calls {n} conv/linear layers but the config quantises {len(layers)}")
    specs = [(LayerQuant.parse(d["quant"]), bool(d["unsigned"])) for d in layers]
    return wrap_in_call_order(module, input_shape, lambda i, op: FakeQuantLayer(op, *specs[i]))
