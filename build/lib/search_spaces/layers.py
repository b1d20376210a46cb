"""Layer descriptions shared by cost models, latency tables and the static-module builder.

A :class:`LayerSpec` is the canonical operator signature of one layer of a concrete network (OFA's latency-table
key grammar, extended with bit-width): the same value prices a layer (MACs, params, latency) and rebuilds it.
No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LayerSpec", "make_divisible", "layer_macs", "layer_params", "conv_out"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going below 90% of it (MobileNet convention)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv with odd kernel: OFA's ``(f - 1) // stride + 1``."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``op`` in {conv, mbconv, final_expand, pool, feature_mix, classifier}."""

    op: str
    in_hw: int
    in_c: int
    out_c: int
    kernel: int = 1
    stride: int = 1
    mid_c: int = 0
    skip: bool = False
    se: bool = False
    act: str = "relu"
    bits: int = 32

    @property
    def out_hw(self) -> int:
        if self.op == "pool":
            return 1
        return conv_out(self.in_hw, self.stride)

    @property
    def has_expand(self) -> bool:
        """OFA's grammar: a block whose middle width equals its input width (expand ratio 1) has no 1x1 expand."""
        return self.mid_c != self.in_c

    @property
    def se_c(self) -> int:
        return make_divisible(self.mid_c // 4, 8)

    def key(self) -> str:
        """Canonical signature string (OFA LUT grammar for the ops OFA tables know)."""
        hs = int(self.act == "hswish")
        io = f"input:{self.in_hw}x{self.in_hw}x{self.in_c}-output:{self.out_hw}x{self.out_hw}x{self.out_c}"
        suffix = "" if self.bits == 32 else f"-bits:{self.bits}"
        if self.op == "mbconv":
            return (
                f"expanded_conv-{io}-expand:{self.mid_c}-kernel:{self.kernel}-stride:{self.stride}"
                f"-idskip:{int(self.skip)}-se:{int(self.se)}-hs:{hs}{suffix}"
            )
        if self.op == "classifier":
            return f"Logits-input:1x1x{self.in_c}-output:{self.out_c}{suffix}"
        name = {"conv": "Conv", "final_expand": "Conv_1", "pool": "AvgPool2D", "feature_mix": "Conv_2"}[self.op]
        return f"{name}-{io}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_macs(layer: LayerSpec) -> int:
    """Multiply-accumulates of convolutions and linear layers (what ``torch.utils.flop_counter`` counts / 2)."""
    hw_in, hw_out = layer.in_hw * layer.in_hw, layer.out_hw * layer.out_hw
    if layer.op == "conv":
        return hw_out * layer.kernel * layer.kernel * layer.in_c * layer.out_c
    if layer.op in ("final_expand",):
        return hw_in * layer.in_c * layer.out_c
    if layer.op in ("feature_mix", "classifier"):
        return layer.in_c * layer.out_c
    if layer.op == "pool":
        return 0
    if layer.op == "mbconv":
        mid = layer.mid_c
        expand = hw_in * layer.in_c * mid if layer.has_expand else 0
        depthwise = hw_out * mid * layer.kernel * layer.kernel
        se = 2 * mid * layer.se_c if layer.se else 0
        project = hw_out * mid * layer.out_c
        return expand + depthwise + se + project
    raise ValueError(f"unknown layer op {layer.op!r}")


def layer_params(layer: LayerSpec) -> int:
    """Trainable parameters (conv weights, BN affine, biases), matching the exported module."""
    if layer.op == "conv":
        return layer.kernel * layer.kernel * layer.in_c * layer.out_c + 2 * layer.out_c
    if layer.op == "final_expand":
        return layer.in_c * layer.out_c + 2 * layer.out_c
    if layer.op == "feature_mix":
        return layer.in_c * layer.out_c
    if layer.op == "classifier":
        return layer.in_c * layer.out_c + layer.out_c
    if layer.op == "pool":
        return 0
    if layer.op == "mbconv":
        mid = layer.mid_c
        n = (layer.in_c * mid + 2 * mid) if layer.has_expand else 0
        n += mid * layer.kernel * layer.kernel + 2 * mid
        if layer.se:
            n += mid * layer.se_c + layer.se_c + layer.se_c * mid + mid
        n += mid * layer.out_c + 2 * layer.out_c
        return n
    raise ValueError(f"unknown layer op {layer.op!r}")
