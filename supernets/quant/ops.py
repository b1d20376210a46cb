"""Quantised wrappers around conv / linear layers, elastic or plain (EQ-Net's quantised elastic operators).

A :class:`QuantLayer` wraps one layer of a supernet without changing it: the wrapped module keeps its parameters
(the shared latent full-precision weights), its slicing (``active_weight``) and its methods (``set_active``,
``export``; unknown attributes are forwarded to it), so the supernet that owns it keeps working. The wrapper adds
a weight quantiser (EQ-Net's per-bit tables by default, or another family of
:data:`~supernets.quant.quantizers.WEIGHT_QUANTIZERS`) and an input-activation quantiser with its own table per
bit-width / granularity / symmetry, and computes ``op(fake_quant(x), fake_quant(W_active))``.

What a layer runs at is a :class:`~search_spaces.quant.LayerQuant` taken from the supernet's :class:`Binding` in
call order (the policy lists running layers in forward order), or a fixed ``config``. How a wrapped type exposes its
active weight and computes with a given weight is an adapter in :data:`ADAPTERS` (one per layer type).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.quant import LayerQuant
from supernets.ops import ElasticConv2d, ElasticDepthwiseConv2d, ElasticLinear
from supernets.quant.quantizers import ActQuantizer, WeightQuantizer, WeightQuantizerFamily

__all__ = ["Adapter", "ADAPTERS", "Binding", "QuantLayer", "adapter_for"]


@dataclass(frozen=True)
class Adapter:
    """How to quantise one layer type: its active weight for an input, the op with a given weight, its full weight."""

    weight: Callable[[Any, torch.Tensor], torch.Tensor]
    compute: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]
    full_weight: Callable[[Any], torch.Tensor]


def _elastic_conv(m: ElasticConv2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w, m.active_bias(), m.conv.stride, m.conv.padding)


def _elastic_dw(m: ElasticDepthwiseConv2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w, None, m.conv.stride, m.active_kernel // 2, groups=x.size(1))


def _elastic_linear_weight(m: ElasticLinear, x: torch.Tensor) -> torch.Tensor:
    return m.linear.weight[: m.active_out, : x.size(-1)]


def _elastic_linear(m: ElasticLinear, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w, None if m.linear.bias is None else m.linear.bias[: m.active_out])


def _conv(m: nn.Conv2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)


#: Layer type -> adapter. Subclasses of a registered type use its adapter (looked up along the MRO).
ADAPTERS: dict[type, Adapter] = {
    ElasticConv2d: Adapter(lambda m, x: m.active_weight(x.size(1)), _elastic_conv, lambda m: m.conv.weight),
    ElasticDepthwiseConv2d: Adapter(lambda m, x: m.active_weight(), _elastic_dw, lambda m: m.conv.weight),
    ElasticLinear: Adapter(_elastic_linear_weight, _elastic_linear, lambda m: m.linear.weight),
    nn.Conv2d: Adapter(lambda m, x: m.weight, _conv, lambda m: m.weight),
    nn.Linear: Adapter(lambda m, x: m.weight, lambda m, x, w: F.linear(x, w, m.bias), lambda m: m.weight),
}


def adapter_for(module: nn.Module) -> Adapter | None:
    for cls in type(module).__mro__:
        if cls in ADAPTERS:
            return ADAPTERS[cls]
    return None


class Binding:
    """Hands each running layer its :class:`LayerQuant` in call order during one supernet forward pass."""

    def __init__(self) -> None:
        self.configs: list[LayerQuant] = []
        self.calls: list[QuantLayer] = []
        self.open = False

    def start(self, configs: list[LayerQuant]) -> None:
        self.configs, self.calls, self.open = configs, [], True

    def take(self, layer: QuantLayer) -> LayerQuant:
        if not self.open:
            raise RuntimeError("a quantised layer of a supernet ran outside the supernet's forward; call the "
                               "quantised supernet itself (or give the layer a fixed config)")
        i = len(self.calls)
        if i >= len(self.configs):
            raise RuntimeError(f"the network ran more quantised layers than the policy lists ({len(self.configs)}); "
                               "the policy does not match the architecture's layers")
        self.calls.append(layer)
        return self.configs[i]

    def finish(self) -> list[QuantLayer]:
        self.open = False
        if len(self.calls) != len(self.configs):
            raise RuntimeError(f"the network ran {len(self.calls)} quantised layers but the policy lists "
                               f"{len(self.configs)}; the policy does not match the architecture's layers")
        return self.calls


class QuantLayer(nn.Module):
    """Fake-quantised conv/linear around an existing (elastic or plain) layer ``op``."""

    op: Any  # the wrapped layer: its own methods (set_active, permute_*, export) are called through the wrapper
    wq: WeightQuantizerFamily
    aq: ActQuantizer

    def __init__(self, op: nn.Module, binding: Binding | None = None, config: LayerQuant | None = None, *,
                 weight_quantizer: Callable[[int], nn.Module] = WeightQuantizer) -> None:
        super().__init__()
        adapter = adapter_for(op)
        if adapter is None:
            raise TypeError(f"cannot quantise a {type(op).__name__}; known layer types: "
                            f"{sorted(c.__name__ for c in ADAPTERS)}")
        self.op = op
        self.adapter = adapter
        self.wq = weight_quantizer(adapter.full_weight(op).size(0))  # type: ignore[assignment]
        self.aq = ActQuantizer()
        self.binding, self.config = binding, config
        self.quantize_weights = self.quantize_acts = True
        self.calibrating = False
        self.calibration_options: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            op = self.__dict__.get("_modules", {}).get("op")
            if op is None:
                raise
            return getattr(op, name)

    def current_config(self) -> LayerQuant:
        if self.binding is not None:
            return self.binding.take(self)
        if self.config is None:
            raise RuntimeError("this quantised layer has neither a binding nor a fixed config")
        return self.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.current_config()
        w = self.adapter.weight(self.op, x)
        if self.calibrating:
            if not bool(self.aq.initialized):
                self.aq.calibrate(x, **self.calibration_options)
            if not bool(self.wq.initialized):
                self.wq.calibrate(self.adapter.full_weight(self.op), **self.calibration_options)
            return self.adapter.compute(self.op, x, w)
        if self.quantize_acts:
            x = self.aq(x, cfg.a_bits, cfg.a_symmetric)
        if self.quantize_weights:
            w = self.wq(w, cfg.w_bits, cfg.per_channel, cfg.w_symmetric)
        return self.adapter.compute(self.op, x, w)

    @torch.no_grad()
    def permute_out(self, perm: torch.Tensor) -> None:
        self.op.permute_out(perm)
        self.wq.permute_channels(perm)

    @torch.no_grad()
    def permute_in(self, perm: torch.Tensor) -> None:
        self.op.permute_in(perm)
