"""Elastic quantisation (EQ-Net, Xu et al., ICCV 2023): LSQ quantisers with per-bit-width tables (or Double
Rounding's one integer copy, :mod:`supernets.quant.double_rounding`), quantised wrappers around any supernet's
layers, fake-quant and real int8 export."""

from __future__ import annotations

from supernets.quant import double_rounding  # noqa: F401  (registers the double_rounding quantiser family)
from supernets.quant.export import FakeQuantLayer, call_order, fake_quant_config, wrap_in_call_order
from supernets.quant.ops import ADAPTERS, Adapter, Binding, QuantLayer, adapter_for
from supernets.quant.quantizers import (
    BITS,
    WEIGHT_QUANTIZERS,
    ActQuantizer,
    WeightQuantizer,
    fake_quant,
    grad_scale,
    int_range,
    lp_init,
    quantize_dequantize,
    round_ste,
)
from supernets.quant.supernet import (
    QuantSupernet,
    calibrate,
    calibration,
    full_precision,
    input_shape,
    quant_layers,
    quantization_mode,
)

__all__ = [
    "FakeQuantLayer", "call_order", "fake_quant_config", "wrap_in_call_order", "ADAPTERS", "Adapter", "Binding",
    "QuantLayer", "adapter_for", "BITS", "ActQuantizer", "WeightQuantizer", "fake_quant", "grad_scale", "int_range",
    "lp_init", "quantize_dequantize", "round_ste", "WEIGHT_QUANTIZERS", "QuantSupernet", "calibrate",
    "calibration", "full_precision", "input_shape", "quant_layers", "quantization_mode",
]
