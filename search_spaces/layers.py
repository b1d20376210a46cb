"""Layer descriptions shared by cost models, latency tables and the static-module builder.

A :class:`LayerSpec` is the canonical operator signature of one layer of a concrete network (OFA's latency-table
key grammar, extended with bit-width): the same value prices a layer (MACs, params, latency) and rebuilds it.
No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LayerSpec", "make_divisible", "layer_macs", "layer_params", "layer_conv_macs", "layer_bitops",
           "conv_out", "LAYER_OPS", "OFA_OPS", "NB201_LAYER_OPS", "VIT_OPS"]


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


#: OFA MobileNetV3's ops (their keys follow OFA's latency-table grammar)
OFA_OPS = ("conv", "mbconv", "final_expand", "pool", "feature_mix", "classifier")
#: NAS-Bench-201's ops: stem conv-BN, ReLU-conv-BN (cell convs, reduction convs), the reduction shortcut
#: (2x2 average pool + 1x1 conv), 3x3 average pool and identity edges, BN-ReLU-pool-linear head
NB201_LAYER_OPS = ("conv_bn", "relu_conv_bn", "pool_conv", "avg_pool_3x3", "identity", "bn_relu_head")
#: vision-transformer ops: linear patch embedding (+ class token, position embedding), pre-norm block, LN + head
VIT_OPS = ("patch_embed", "vit_block", "vit_head")
LAYER_OPS = OFA_OPS + NB201_LAYER_OPS + VIT_OPS


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``op`` in :data:`LAYER_OPS`. Transformer ops use ``mid_c`` for the MLP hidden width, ``heads``,
    ``head_dim`` and ``tokens``; ``patch_embed`` uses ``kernel`` = ``stride`` = the patch size."""

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
    heads: int = 0
    head_dim: int = 0
    tokens: int = 0
    #: quantised layers: (weight bits, activation bits) of each conv/linear inside, in forward order
    #: (:func:`layer_conv_macs` order); ``bits`` is then the widest weight bit-width. Empty: float (``bits``).
    qbits: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.op not in LAYER_OPS:
            raise ValueError(f"unknown layer op {self.op!r}; allowed: {list(LAYER_OPS)}")
        object.__setattr__(self, "qbits", tuple((int(w), int(a)) for w, a in self.qbits))

    @property
    def out_hw(self) -> int:
        if self.op in ("pool", "bn_relu_head") or self.op in VIT_OPS:
            return 1
        if self.op == "pool_conv":
            return self.in_hw // 2
        return conv_out(self.in_hw, self.stride)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Input tensor shape of the layer built alone (linear layers take features, transformer ops tokens)."""
        if self.op == "classifier":
            return (batch, self.in_c)
        if self.op in ("vit_block", "vit_head"):
            return (batch, self.tokens, self.in_c)
        return (batch, self.in_c, self.in_hw, self.in_hw)

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
        if self.qbits:
            suffix += "-q:" + ".".join(f"w{w}a{a}" for w, a in self.qbits)
        if self.op == "mbconv":
            return (
                f"expanded_conv-{io}-expand:{self.mid_c}-kernel:{self.kernel}-stride:{self.stride}"
                f"-idskip:{int(self.skip)}-se:{int(self.se)}-hs:{hs}{suffix}"
            )
        if self.op == "classifier":
            return f"Logits-input:1x1x{self.in_c}-output:{self.out_c}{suffix}"
        if self.op not in OFA_OPS:
            return (f"{self.op}-input:{self.in_hw}x{self.in_hw}x{self.in_c}-output:{self.out_hw}x{self.out_hw}x"
                    f"{self.out_c}-kernel:{self.kernel}-stride:{self.stride}-mid:{self.mid_c}-heads:{self.heads}"
                    f"-head_dim:{self.head_dim}-tokens:{self.tokens}{suffix}")
        name = {"conv": "Conv", "final_expand": "Conv_1", "pool": "AvgPool2D", "feature_mix": "Conv_2"}[self.op]
        return f"{name}-{io}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_macs(layer: LayerSpec) -> int:
    """Multiply-accumulates of convolutions and linear layers (what ``torch.utils.flop_counter`` counts / 2)."""
    hw_in, hw_out = layer.in_hw * layer.in_hw, layer.out_hw * layer.out_hw
    if layer.op in ("avg_pool_3x3", "identity"):
        return 0
    if layer.op == "pool_conv":
        return hw_out * layer.in_c * layer.out_c
    if layer.op == "bn_relu_head":
        return layer.in_c * layer.out_c
    if layer.op in VIT_OPS:
        return _vit_macs(layer)
    if layer.op in ("conv", "conv_bn", "relu_conv_bn"):
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


def _vit_macs(layer: LayerSpec) -> int:
    e, t = layer.in_c, layer.tokens
    if layer.op == "patch_embed":
        return (layer.in_hw // layer.kernel) ** 2 * layer.kernel**2 * e * layer.out_c
    if layer.op == "vit_head":
        return e * layer.out_c
    qkv = layer.heads * layer.head_dim
    return t * (4 * e * qkv + 2 * e * layer.mid_c) + 2 * layer.heads * t * t * layer.head_dim


def _vit_params(layer: LayerSpec) -> int:
    e = layer.in_c
    if layer.op == "patch_embed":
        n_patches, out = (layer.in_hw // layer.kernel) ** 2, layer.out_c
        return (layer.kernel**2 * e + 1) * out + layer.tokens * out + (layer.tokens - n_patches) * out
    if layer.op == "vit_head":
        return 2 * e + (e + 1) * layer.out_c
    qkv, h = layer.heads * layer.head_dim, layer.mid_c
    return 4 * e + 3 * (e + 1) * qkv + (qkv + 1) * e + (e + 1) * h + (h + 1) * e


def layer_params(layer: LayerSpec) -> int:
    """Trainable parameters (conv weights, BN affine, biases), matching the exported module."""
    if layer.op in ("avg_pool_3x3", "identity"):
        return 0
    if layer.op == "pool_conv":
        return layer.in_c * layer.out_c
    if layer.op == "bn_relu_head":
        return 2 * layer.in_c + layer.in_c * layer.out_c + layer.out_c
    if layer.op in VIT_OPS:
        return _vit_params(layer)
    if layer.op in ("conv", "conv_bn", "relu_conv_bn"):
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


def layer_conv_macs(layer: LayerSpec) -> list[int]:
    """MACs of each weighted conv/linear of the layer in forward order (the quantisable slots it holds)."""
    hw_in, hw_out = layer.in_hw * layer.in_hw, layer.out_hw * layer.out_hw
    if layer.op in ("pool", "avg_pool_3x3", "identity"):
        return []
    if layer.op == "mbconv":
        mid = layer.mid_c
        expand = [hw_in * layer.in_c * mid] if layer.has_expand else []
        se = [mid * layer.se_c, layer.se_c * mid] if layer.se else []
        return expand + [hw_out * mid * layer.kernel * layer.kernel] + se + [hw_out * mid * layer.out_c]
    if layer.op == "vit_block":
        t, e, qkv, h = layer.tokens, layer.in_c, layer.heads * layer.head_dim, layer.mid_c
        return [t * e * qkv] * 3 + [t * qkv * e, t * e * h, t * h * e]
    return [layer_macs(layer)]


def layer_bitops(layer: LayerSpec) -> int:
    """Bit-operations: MACs x weight bits x activation bits per conv/linear (``bits`` x ``bits`` when float)."""
    convs = layer_conv_macs(layer)
    if not layer.qbits:
        return layer_macs(layer) * layer.bits * layer.bits
    if len(layer.qbits) != len(convs):
        raise ValueError(f"layer {layer.key()} has {len(convs)} weighted ops but {len(layer.qbits)} bit pairs")
    return sum(m * w * a for m, (w, a) in zip(convs, layer.qbits))
