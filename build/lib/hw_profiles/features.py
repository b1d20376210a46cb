"""Physical cost features of one layer, the inputs of the calibrated latency model.

Following nn-Meter's observation (Zhang et al., MobiSys 2021) that a kernel's latency is explained by its FLOPs and
memory traffic, and OFA's per-block tables, each :class:`~search_spaces.layers.LayerSpec` is described by a few
non-negative quantities whose non-negative combination is a latency: multiply-accumulates split by kind (pointwise /
dense / depthwise; they run at very different efficiencies on mobile CPUs), activation and weight traffic in bytes,
the extra element-wise work of squeeze-excite and h-swish, and a per-operator overhead. Units are scaled so that
typical values are O(1) (MACs in millions, bytes in MB), which keeps least-squares fits well conditioned.

Two effects of real kernels are modelled because they decide small feature maps (OFA's 5x5 and 7x7 stages):
GEMM-based 1x1 convolutions compute whole micro-tiles, so their spatial rows are padded to ``row_tile``; direct
depthwise/dense convolutions skip taps that fall on the zero padding (a 7x7 kernel on a 10x10 map touches 69% of
the nominal taps) and vectorise over channels in ``channel_tile`` lanes. The tile sizes are part of a fitted model's
saved state (:class:`FeatureConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from search_spaces.layers import LayerSpec

__all__ = ["FEATURE_NAMES", "FeatureConfig", "layer_features", "feature_matrix", "valid_taps"]

FEATURE_NAMES: tuple[str, ...] = (
    "pointwise_mmac",  # 1x1 convolutions (rows padded to the GEMM tile) and linear layers, millions of MACs
    "dense_mmac",  # k x k full convolutions (the stem), in-bounds taps only, millions of MACs
    "depthwise_mmac",  # depthwise k x k convolutions, in-bounds taps, channels padded to the vector width
    "act_mb",  # activations read and written by the layer, MB
    "weight_mb",  # weights read once per inference, MB
    "se_melem",  # squeeze-excite: pooling read + gating multiply over the mid tensor, millions of elements
    "hswish_melem",  # h-swish applied to this many million elements
    "ops",  # operator launches (per-kernel overhead)
)
_SCALE = np.array([1e-6, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6, 1.0])


@dataclass(frozen=True)
class FeatureConfig:
    """Kernel granularity: GEMM row tile of 1x1 convolutions and channel vector width of direct convolutions."""

    row_tile: int = 8
    channel_tile: int = 16

    def __post_init__(self) -> None:
        for name in ("row_tile", "channel_tile"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FeatureConfig.{name} must be a positive int, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ceil_to(n: int, tile: int) -> int:
    return -(-n // tile) * tile


def valid_taps(size: int, kernel: int, stride: int) -> int:
    """Kernel taps inside a ``size``-long input, summed over the outputs of a 'same'-padded 1-D convolution."""
    pad, n_out = kernel // 2, (size - 1) // stride + 1
    return sum(min(o * stride + pad, size - 1) - max(o * stride - pad, 0) + 1 for o in range(n_out))


def _mbconv(s: LayerSpec, nbytes: float, cfg: FeatureConfig) -> list[float]:
    hw_in, hw_out = s.in_hw * s.in_hw, s.out_hw * s.out_hw
    mid = s.mid_c
    expand_out = hw_in * mid if s.has_expand else 0
    pw = _ceil_to(hw_out, cfg.row_tile) * mid * s.out_c
    pw += _ceil_to(hw_in, cfg.row_tile) * s.in_c * mid if s.has_expand else 0
    dw = valid_taps(s.in_hw, s.kernel, s.stride) ** 2 * _ceil_to(mid, cfg.channel_tile)
    acts = hw_in * s.in_c + 2 * expand_out + 2 * hw_out * mid + hw_out * s.out_c
    acts += hw_out * s.out_c * 2 if s.skip else 0  # the residual add reads the input and writes again
    weights = (s.in_c * mid if s.has_expand else 0) + mid * s.kernel * s.kernel + mid * s.out_c
    se = 0
    if s.se:
        weights += 2 * mid * s.se_c
        se = 2 * hw_out * mid
    hs = (expand_out + hw_out * mid) if s.act == "hswish" else 0
    ops = (3 if s.has_expand else 2) + (4 if s.se else 0) + (1 if s.skip else 0)
    return [pw, 0, dw, acts * nbytes, weights * nbytes, se, hs, ops]


def _conv(s: LayerSpec, nbytes: float, cfg: FeatureConfig) -> list[float]:
    hw_in, hw_out = s.in_hw * s.in_hw, s.out_hw * s.out_hw
    if s.kernel == 1:
        pw, dense = _ceil_to(hw_out, cfg.row_tile) * s.in_c * s.out_c, 0
    else:
        pw, dense = 0, valid_taps(s.in_hw, s.kernel, s.stride) ** 2 * s.in_c * s.out_c
    acts = hw_in * s.in_c + hw_out * s.out_c
    hs = hw_out * s.out_c if s.act == "hswish" else 0
    return [pw, dense, 0, acts * nbytes, s.kernel * s.kernel * s.in_c * s.out_c * nbytes, 0, hs, 1]


def _pool(s: LayerSpec, nbytes: float, cfg: FeatureConfig) -> list[float]:
    return [0, 0, 0, (s.in_hw * s.in_hw * s.in_c + s.out_c) * nbytes, 0, 0, 0, 1]


def _linear(s: LayerSpec, nbytes: float, cfg: FeatureConfig) -> list[float]:
    # batch-1 matrix-vector products: no row tiling, dominated by reading the weights
    hs = s.out_c if s.act == "hswish" and s.op == "feature_mix" else 0
    return [s.in_c * s.out_c, 0, 0, (s.in_c + s.out_c) * nbytes, s.in_c * s.out_c * nbytes, 0, hs, 1]


_BY_OP = {"mbconv": _mbconv, "conv": _conv, "final_expand": _conv, "pool": _pool, "feature_mix": _linear,
          "classifier": _linear}


def layer_features(spec: LayerSpec, config: FeatureConfig | None = None) -> np.ndarray:
    """The feature vector of one layer (see :data:`FEATURE_NAMES`)."""
    try:
        fn = _BY_OP[spec.op]
    except KeyError:
        raise ValueError(f"no cost features for layer op {spec.op!r}; known ops: {sorted(_BY_OP)}") from None
    if spec.bits <= 0:
        raise ValueError(f"bits must be positive, got {spec.bits} in {spec.key()!r}")
    return np.asarray(fn(spec, spec.bits / 8.0, config or FeatureConfig()), dtype=np.float64) * _SCALE


def feature_matrix(specs: Sequence[LayerSpec], config: FeatureConfig | None = None) -> np.ndarray:
    """Stack :func:`layer_features` of ``specs`` into an (n, n_features) array."""
    if not specs:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.stack([layer_features(s, config) for s in specs])
