"""Real int8 export of an 8-bit fake-quant subnet with torch.ao's quantised kernels (x86 = fbgemm/oneDNN).

Each :class:`~supernets.quant.export.FakeQuantLayer` becomes an :class:`Int8Layer`: the input is quantised with
the layer's own learned step and zero point (exactly the fake quantiser's grid), the weights are the fake
quantiser's integers, with a following batch norm folded in exactly as a per-channel rescale
(``s_c' = s_c |gamma_c / sigma_c|``, integers negated where the factor is negative), and ``torch.ao.nn.quantized``
runs the convolution / linear layer in int8 with int32 accumulation. The only step the fake-quant module does not
have is the 8-bit requantisation of each layer's output, whose range is observed on calibration batches; the
output is then dequantised so that everything between quantised layers (activations, residual adds, pooling,
squeeze-excite) runs as in the fake-quant module.

Engines: ``x86`` (fbgemm / oneDNN) runs dense convs / linears with asymmetric per-channel weights, but its depthwise
kernels are only correct for symmetric weights, so such policies are refused; ``qnnpack`` supports them. The default
(:func:`default_engine`) is ``x86`` on a CPU with AVX-512 VNNI and ``qnnpack`` elsewhere: without VNNI, fbgemm adds
pairs of u8 x s8 products in saturating int16 (``vpmaddubsw``) and oneDNN halves the weights to avoid that, so
``x86`` computed the 8-bit nets 6-9 % of their output range away from the fake-quant module on an AVX2 CPU (AMD
Zen 3), and cost a trained Fashion-MNIST subnet 7 points of top-1, where ``qnnpack`` (int32 products) was 0.5-3.5 %
away, the quantisation's own error.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.ao.nn.quantized as nnq
from torch import nn

from search_spaces.errors import BadInputError
from supernets.quant.export import FakeQuantLayer

__all__ = ["Int8ExportError", "Int8Layer", "Int8Network", "default_engine", "quantized_engine", "to_int8",
           "int8_supported", "interleaved_latency_ms"]

_DEPRECATION = r".*quantiz.*deprecated.*"


class Int8ExportError(BadInputError):
    """The subnet's policy cannot run on the chosen integer engine."""


@contextmanager
def quantized_engine(engine: str, *, check: bool = True) -> Iterator[None]:
    """Select torch's quantised engine for the block (restored on exit); ``check`` verifies it is available."""
    supported = torch.backends.quantized.supported_engines if check else [engine]
    if engine not in supported:
        raise Int8ExportError(f"quantised engine {engine!r} is not available; this torch has {supported}")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATION, category=UserWarning)
            yield
    finally:
        torch.backends.quantized.engine = previous


def default_engine() -> str:
    """``x86`` where fbgemm's int8 products are exact (AVX-512 VNNI), else ``qnnpack`` (exact everywhere)."""
    supported = torch.backends.quantized.supported_engines
    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
    if "x86" in supported and (vnni or "qnnpack" not in supported):
        return "x86"
    return "qnnpack" if "qnnpack" in supported else supported[-1]


def int8_supported(module: nn.Module, engine: str | None = None) -> list[str]:
    """Reasons why ``module`` (a fake-quant subnet) cannot be exported to int8 on ``engine`` (default:
    :func:`default_engine`; empty: it can)."""
    engine = engine or default_engine()
    problems = []
    for name, m in module.named_modules():
        if not isinstance(m, FakeQuantLayer):
            continue
        cfg = m.config
        if (cfg.w_bits, cfg.a_bits) != (8, 8):
            problems.append(f"{name}: W{cfg.w_bits}A{cfg.a_bits} (int8 kernels need W8A8)")
        depthwise = isinstance(m.op, nn.Conv2d) and m.op.groups > 1
        if engine in ("x86", "fbgemm") and depthwise and not cfg.w_symmetric:
            problems.append(f"{name}: asymmetric weights on a depthwise conv (the {engine} depthwise kernel "
                            "ignores weight zero points; use symmetric weights or engine='qnnpack')")
        if engine == "onednn" and not cfg.w_symmetric:
            problems.append(f"{name}: asymmetric weights (onednn needs symmetric weights)")
    return problems


class Int8Layer(nn.Module):
    """float in -> quantise (learned grid) -> int8 conv/linear -> dequantise -> float out."""

    def __init__(self, qop: nn.Module, a_scale: float, a_zero_point: int) -> None:
        super().__init__()
        self.qop, self.a_scale, self.a_zero_point = qop, float(a_scale), int(a_zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.quantize_per_tensor(x, self.a_scale, self.a_zero_point, torch.quint8)
        return self.qop(q).dequantize()


class Int8Network(nn.Module):
    """The converted network; runs under its engine (selected and restored around each forward)."""

    def __init__(self, net: nn.Module, engine: str) -> None:
        super().__init__()
        self.net, self.engine = net, engine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with quantized_engine(self.engine, check=False):  # checked at export; the query costs ~70 us per call
            return self.net(x)


def _folding_pairs(module: nn.Module) -> dict[FakeQuantLayer, tuple[nn.Module, str, nn.BatchNorm2d]]:
    """Fake-quant convs directly followed by a BatchNorm2d in the same nn.Sequential."""
    pairs: dict[FakeQuantLayer, tuple[nn.Module, str, nn.BatchNorm2d]] = {}
    for parent in module.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            first, second = parent._modules[a], parent._modules[b]
            if isinstance(first, FakeQuantLayer) and isinstance(second, nn.BatchNorm2d):
                pairs[first] = (parent, b, second)
    return pairs


@torch.no_grad()
def _observe_outputs(module: nn.Module, watch: dict[FakeQuantLayer, nn.Module],
                     batches: Iterable[torch.Tensor]) -> dict[FakeQuantLayer, tuple[float, float]]:
    ranges: dict[FakeQuantLayer, tuple[float, float]] = {}

    def hook(layer: FakeQuantLayer) -> Callable[..., None]:
        def record(_m: nn.Module, _args: object, out: torch.Tensor) -> None:
            lo, hi = ranges.get(layer, (0.0, 0.0))
            ranges[layer] = (min(lo, float(out.min())), max(hi, float(out.max())))
        return record

    handles = [after.register_forward_hook(hook(layer)) for layer, after in watch.items()]
    try:
        seen = 0
        for x in batches:
            module(x)
            seen += 1
        if seen == 0:
            raise ValueError("int8 export needs at least one calibration batch, got none")
    finally:
        for h in handles:
            h.remove()
    return ranges


def _int8_op(layer: FakeQuantLayer, bn: nn.BatchNorm2d | None, out_range: tuple[float, float]) -> nn.Module:
    op = layer.op
    w = op.weight.detach()
    shape = (-1,) + (1,) * (w.dim() - 1)
    c = w.size(0)
    s = layer.w_scale.reshape(-1).expand(c).clone()  # per-tensor step broadcast to every channel
    z = layer.w_zero.reshape(-1).expand(c).clone()
    ints = torch.clamp(torch.round(w / s.reshape(shape) + z.reshape(shape)), *layer.w_range)
    bias = op.bias.detach().clone() if op.bias is not None else torch.zeros(c)
    if bn is not None:
        if bn.running_var is None or bn.running_mean is None:
            raise Int8ExportError("batch norm without running statistics cannot be folded into an int8 layer")
        f = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        bias = (bias - bn.running_mean) * f + bn.bias.detach()
        sign = torch.where(f < 0, -1.0, 1.0)
        ints, z, s = (ints * sign.reshape(shape)).clamp(-128, 127), z * sign, s * f.abs()
    s = s.clamp_min(1e-12)
    zi = z.round().long()
    qw = torch.quantize_per_channel((ints - z.reshape(shape)) * s.reshape(shape), s.double(), zi, 0, torch.qint8)
    lo, hi = min(out_range[0], 0.0), max(out_range[1], 0.0)
    out_scale = max((hi - lo) / 255.0, 1e-8)
    out_zero = int(min(255, max(0, round(-lo / out_scale))))
    if isinstance(op, nn.Linear):
        q: nn.Module = nnq.Linear(op.in_features, op.out_features)
    else:
        q = nnq.Conv2d(op.in_channels, op.out_channels, op.kernel_size, op.stride, op.padding, op.dilation,
                       op.groups, bias=True)
    q.set_weight_bias(qw, bias.float())  # type: ignore[operator]
    q.scale, q.zero_point = out_scale, out_zero  # type: ignore[assignment]
    return q


@torch.no_grad()
def to_int8(fake_quant: nn.Module, calibration_batches: Iterable[torch.Tensor], *,
            engine: str | None = None) -> Int8Network:
    """Integer version of an 8-bit fake-quant subnet (``calibration_batches`` set each layer's output range) on
    ``engine`` (default: :func:`default_engine`)."""
    engine = engine or default_engine()
    problems = int8_supported(fake_quant, engine)
    if problems:
        raise Int8ExportError(f"cannot export to int8 on {engine!r}: " + "; ".join(problems[:5])
                              + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    net = copy.deepcopy(fake_quant).eval()
    pairs = _folding_pairs(net)
    layers = [m for m in net.modules() if isinstance(m, FakeQuantLayer)]
    ranges = _observe_outputs(net, {m: pairs[m][2] if m in pairs else m for m in layers}, calibration_batches)
    with quantized_engine(engine):
        swaps = {}
        for m in layers:
            a_zero = int(m.a_zero) - m.a_range[0]  # signed grid [-128, 127] -> quint8 [0, 255]
            swaps[m] = Int8Layer(_int8_op(m, pairs[m][2] if m in pairs else None, ranges.get(m, (0.0, 0.0))),
                                 float(m.a_scale), a_zero)
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if child in swaps:
                    setattr(parent, name, swaps[child])
        for parent, name, _ in pairs.values():
            setattr(parent, name, nn.Identity())
    return Int8Network(net, engine).eval()


@torch.no_grad()
def interleaved_latency_ms(modules: dict[str, nn.Module], x: torch.Tensor, *, repeats: int = 20,
                           warmup: int = 3) -> dict[str, float]:
    """Median forward latency (ms) of each module on ``x``, runs interleaved so machine load hits all alike."""
    for m in modules.values():
        m.eval()
        for _ in range(warmup):
            m(x)
    times: dict[str, list[float]] = {k: [] for k in modules}
    for _ in range(repeats):
        for k, m in modules.items():
            t = time.perf_counter()
            m(x)
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}
