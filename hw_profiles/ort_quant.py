"""Bit-aware latency measured in the deployment runtime: ONNX Runtime's int8 kernels (``hw=local_cpu_int8``).

A quantised layer's signature carries its (weight, activation) bits (``LayerSpec.qbits``). ONNX Runtime's CPU
kernels compute in 8 bits only (``QLinearConv`` / ``QLinearMatMul``, u8 activations x 8-bit weights with int32
accumulation), so every quantised layer is timed in its *runtime form*: the float layer exported to ONNX and
quantised with ORT's own tooling (``onnxruntime.quantization.quantize_static``, QDQ format, per-channel symmetric
8-bit weights, uint8 activations, MinMax calibration, after ORT's ``quant_pre_process``), which ORT's graph optimiser
fuses into the QLinear kernels.
Which integer kernels follows the CPU (:func:`int8_kernels`): ``u8s8`` (int8 weights, ORT's fast default) where the
CPU has VNNI, whose dot products accumulate u8 x s8 exactly; ``u8u8`` elsewhere: every int8 tensor (weights, and
activations of a symmetric policy) stored as uint8 plus 128 with zero point 128, the same grid and the same values,
because ORT's int8 kernels on AVX2 without VNNI add pairs of products in saturating int16 (``vpmaddubsw``). On such
a CPU (AMD Zen 3 here) one MobileNet block computed 11-34 % of its output range wrong with int8 weights (36-56 %
with int8 activations too) and 1.4-1.6 % with u8u8, the quantisation's own error; ORT's documentation names U8U8
as the fix.
Bit-widths below 8 have no kernel of their own: their integers are held in int8 tensors and run through the same
kernels, so a W4A4 layer costs what a W8A8 one does (``runs_as`` says so; there is never a sub-8-bit speed-up the
runtime does not have). Layers without a conv / linear (pooling) run in fp32. Each profile entry records its
``runs_as``; a table lacking a layer's runtime form refuses it (:class:`~hw_profiles.domain.UncoveredOpError`) rather
than extrapolating. The same :func:`quantize_qdq` produces ``nas.export format=onnx_int8``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hw_profiles.backends import BACKENDS, OnnxRuntimeBackend, Runner
from hw_profiles.domain import Domain, UncoveredOpError
from hw_profiles.latency import LatencyModel
from hw_profiles.pricing import LayerPrices
from hw_profiles.profile import HardwareProfile, ProfileFormatError
from search_spaces.base import has_capability
from search_spaces.errors import MissingFileError
from search_spaces.layer_table import LayerTable
from search_spaces.layers import LayerSpec, layer_conv_macs

__all__ = ["NATIVE_BITS", "RUNTIME", "KERNELS", "cpu_flags", "int8_kernels", "runtime_form", "runs_as",
           "quantize_qdq", "RuntimeForms", "OrtInt8Backend", "Int8LatencyModel", "local_cpu_int8",
           "DEFAULT_INT8_PROFILE"]

#: the only integer width ONNX Runtime's CPU conv / matmul kernels compute in
NATIVE_BITS = 8
RUNTIME = "onnxruntime_int8"
DEFAULT_INT8_PROFILE = Path("outputs") / "profiles" / "local_cpu_onnxruntime_int8.json"
_MARK = "_nas_runs_as"  # attribute set on modules built for timing: which form to run them in
#: ``int8_kernels`` choices: ``auto`` picks by the CPU (:func:`int8_kernels`)
KERNELS = ("auto", "u8s8", "u8u8")
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo flags of exact u8 x s8 dot products


def cpu_flags() -> set[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return set(line.partition(":")[2].split())


def int8_kernels(choice: str = "auto", *, flags: set[str] | None = None) -> tuple[str, str]:
    """(``u8s8`` or ``u8u8``, why) for a model ORT runs on this CPU: ``auto`` gives ``u8s8`` on an x86 CPU with VNNI
    (or any non-x86 CPU) and ``u8u8`` on x86 without it, where ORT's int8 kernels saturate."""
    if choice not in KERNELS:
        raise ValueError(f"int8_kernels must be one of {KERNELS}, got {choice!r}")
    if choice != "auto":
        return choice, f"int8_kernels={choice} as given"
    import platform

    flags = cpu_flags() if flags is None else flags
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86") or flags & set(_VNNI):
        return "u8s8", "int8 weights: this CPU multiplies u8 x s8 exactly (" + (
            ", ".join(sorted(flags & set(_VNNI))) or platform.machine()) + ")"
    return "u8u8", ("every int8 tensor stored as uint8 + 128 (the same grid): this x86 CPU has no VNNI, and ORT's "
                    "int8 kernels there add pairs of products in saturating int16")


def runtime_form(spec: LayerSpec) -> LayerSpec:
    """The signature a layer actually runs as in ORT: every conv / linear of a quantised layer at W8A8."""
    if not spec.qbits:
        return spec
    return replace(spec, bits=NATIVE_BITS, qbits=((NATIVE_BITS, NATIVE_BITS),) * len(spec.qbits))


def runs_as(spec: LayerSpec) -> str:
    """``fp32``, ``int8``, or ``int8 (W4A6 held in int8)`` for a layer whose bits the runtime cannot run natively."""
    if not spec.qbits:
        return "fp32"
    narrow = sorted({(w, a) for w, a in spec.qbits if (w, a) != (NATIVE_BITS, NATIVE_BITS)})
    if not narrow:
        return "int8"
    return "int8 (" + ",".join(f"W{w}A{a}" for w, a in narrow) + " held in int8)"


def quantize_qdq(model: bytes, calibration: Sequence[np.ndarray], *, input_name: str = "input",
                 per_channel: bool = True, w_symmetric: bool = True, a_symmetric: bool = False,
                 kernels: str = "auto") -> bytes:
    """An fp32 ONNX model statically quantised by ONNX Runtime's tooling (QDQ, int8 weights; uint8 activations, or
    int8 when ``a_symmetric``; every int8 tensor as uint8 + 128 where :func:`int8_kernels` gives ``u8u8`` for
    ``kernels``); ``calibration`` holds the input batches MinMax calibration runs on."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    unsigned = int8_kernels(kernels)[0] == "u8u8"
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING + 1))  # ORT's tooling logs every rescaled bias/advice on the root logger
    try:
        return _quantize_files(model, Reader(), quantize_static, QuantFormat.QDQ, per_channel,
                               QuantType.QInt8 if a_symmetric else QuantType.QUInt8, QuantType.QInt8,
                               CalibrationMethod.MinMax, {"ActivationSymmetric": a_symmetric,
                                                          "WeightSymmetric": w_symmetric}, unsigned)
    finally:
        root.setLevel(level)


def _quantize_files(model: bytes, reader: Any, quantize_static: Any, fmt: Any, per_channel: bool, a_type: Any,
                    w_type: Any, method: Any, extra: dict[str, Any], unsigned: bool) -> bytes:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        raw, src, dst = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        raw.write_bytes(model)
        # ORT's pre-processing (graph optimisation + shape inference): without it, initialisers the torch exporter
        # shares through Identity nodes (e.g. equal conv biases) stay float and ORT cannot fuse those convs
        quant_pre_process(str(raw), str(src), skip_symbolic_shape=True)
        _spatial_means_as_global_pool(src)
        quantize_static(str(src), str(dst), reader, quant_format=fmt, per_channel=per_channel, activation_type=a_type,
                        weight_type=w_type, calibrate_method=method, extra_options=extra)
        if unsigned:
            _int8_to_uint8(dst)
        return dst.read_bytes()


def _int8_to_uint8(path: Path) -> int:
    """Rewrite, in place, every int8 tensor of a QDQ model as uint8 plus 128: the zero points of ``QuantizeLinear``
    / ``DequantizeLinear`` (so quantised activations become uint8) and the int8 weight initialisers they read. The
    same grid and the same values, run by ORT's u8 x u8 kernels (exact on every CPU). Returns how many zero points
    it rewrote."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}

    def shifted(name: str) -> str:
        new = f"{name}_u8"
        if new not in inits:
            q = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            inits[new] = numpy_helper.from_array(q.astype(np.uint8), new)
            model.graph.initializer.append(inits[new])
        return new

    rewritten = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = inits.get(node.input[2])
        if zp is None or zp.data_type != onnx.TensorProto.INT8:
            continue
        node.input[2] = shifted(node.input[2])
        rewritten += 1
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight stored as integers
            node.input[0] = shifted(node.input[0])
    used = {i for node in model.graph.node for i in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:  # the int8 originals
        model.graph.initializer.remove(init)
    onnx.save(model, str(path))
    return rewritten


def _spatial_means_as_global_pool(path: Path) -> int:
    """Rewrite, in place, every ``ReduceMean`` over the two spatial axes of a 4-d tensor (how torch exports
    ``x.mean((2, 3))``, e.g. in squeeze-excitation) as ``GlobalAveragePool`` (then ``Flatten`` where the mean dropped
    those axes). Same values; but ORT's quantiser has an int8 kernel for the pool (``QLinearGlobalAveragePool``, run
    channels-last like the convs) and none for ``ReduceMean``, which otherwise runs in fp32 between a dequantise and a
    quantise, over the transposed layout: 8 % of the int8 OFA-MBv3 time at 224 px, and the rewrite takes the
    int8/fp32 speed-up from 1.13x to 1.24x there (``bench/quant_latency.py``). Returns how many it rewrote."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.input, *graph.output]
             if v.type.tensor_type.HasField("shape")}
    nodes, done = [], 0
    for node in graph.node:
        axes = None
        if node.op_type == "ReduceMean" and ranks.get(node.input[0]) == 4:
            attrs = {a.name: a for a in node.attribute}
            if "axes" in attrs:
                axes = list(attrs["axes"].ints)
            elif len(node.input) > 1 and node.input[1] in inits:
                axes = numpy_helper.to_array(inits[node.input[1]]).tolist()
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            nodes.append(node)
            continue
        keep = attrs["keepdims"].i if "keepdims" in attrs else 1
        pooled = node.output[0] if keep else node.output[0] + "_pooled"
        nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=node.name + "_as_pool"))
        if not keep:
            nodes.append(helper.make_node("Flatten", [pooled], [node.output[0]], name=node.name + "_flatten", axis=1))
        done += 1
    if done:  # in place, in the same order (a node's inputs still come before it)
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    return done


class RuntimeForms:
    """A quantised space as the int8 runtime runs it: its architectures, with ``layers(arch)`` in runtime form.

    The profile builder measures, calibrates and takes context networks from this view, so the table holds one
    entry per runtime form instead of one per (layer, bits) combination."""

    def __init__(self, space: Any) -> None:
        self.space, self.name = space, space.name

    def sample(self, rng: Any) -> Any:
        return self.space.sample(rng)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.space.bounds()  # type: ignore[no-any-return]

    def decode(self, x: Any) -> Any:
        return self.space.decode(x)

    def encode_many(self, archs: Sequence[Any]) -> np.ndarray:
        return self.space.encode_many(archs)  # type: ignore[no-any-return]

    def layers(self, arch: Any) -> list[LayerSpec]:
        return [runtime_form(s) for s in self.space.layers(arch)]

    def to_dict(self, arch: Any) -> dict[str, Any]:
        return self.space.to_dict(arch)  # type: ignore[no-any-return]

    def from_dict(self, d: dict[str, Any]) -> Any:
        return self.space.from_dict(d)

    def layer_table(self) -> LayerTable:
        """The base space's layer table with every conv / linear layer in int8 form (a quantised space quantises
        all of them), else a table sampled from ``layers``."""
        base = getattr(self.space, "base", None)
        if base is None or getattr(self.space, "fixed_arch", None) is not None or not has_capability(
                base, "layer_table"):
            from hw_profiles.pricing import space_layer_specs

            specs = space_layer_specs(self.space)
            return LayerTable((_one_slot(sorted({runtime_form(s) for s in specs}, key=LayerSpec.key)),))
        return LayerTable(tuple(replace(slot, layers=tuple(tuple(_int8(s) for s in entry) for entry in slot.layers))
                                for slot in base.layer_table().slots))


def _one_slot(specs: list[LayerSpec]) -> Any:
    from search_spaces.layer_table import TableSlot

    return TableSlot("all", (), (), (tuple(specs),))


def _int8(spec: LayerSpec) -> LayerSpec:
    n = len(layer_conv_macs(spec))
    return replace(spec, bits=NATIVE_BITS, qbits=((NATIVE_BITS, NATIVE_BITS),) * n) if n else spec


def _marking(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``build`` fed float signatures, its module marked with the form to run it in (int8 if any layer is)."""
    def make(what: Any) -> Any:
        specs = [what] if isinstance(what, LayerSpec) else list(what)
        floats = [replace(s, bits=32, qbits=()) for s in specs]
        module = build(floats[0] if isinstance(what, LayerSpec) else floats)
        setattr(module, _MARK, "int8" if any(s.qbits for s in specs) else "fp32")
        return module
    return make


class OrtInt8Backend(OnnxRuntimeBackend):
    """ONNX Runtime, quantised layers as ORT's static QDQ int8 models (:func:`quantize_qdq`), float ones as fp32."""

    name = RUNTIME
    #: random input batches the MinMax calibration of a timed layer runs on (ranges do not change kernel speed)
    calibration_batches = 4

    @property
    def version(self) -> str:
        return (f"onnxruntime {self._ort.__version__} (quantize_static QDQ: per-channel weights, u8 activations, "
                f"{int8_kernels()[0]} kernels)")

    def prepare(self, module: Any, input_shape: tuple[int, ...]) -> Runner:
        if getattr(module, _MARK, "fp32") != "int8":
            return super().prepare(module, input_shape)
        import torch

        g = torch.Generator().manual_seed(0)
        x = torch.randn(*input_shape, generator=g)
        calib = [torch.randn(*input_shape, generator=g).numpy() for _ in range(self.calibration_batches)]
        sess = self.session_for(quantize_qdq(self.to_onnx(module, x), calib))
        feed = {"input": x.numpy()}
        return lambda: sess.run(None, feed)

    def forms(self, space: Any, build_layer: Callable[[Any], Any],
              build_network: Callable[[list[Any]], Any] | None) -> tuple[Any, Callable[[Any], Any], Any]:
        if not has_capability(space, "layers") or not getattr(space, "lay", None):
            raise ProfileFormatError(f"hw=local_cpu_int8 times quantised layers: space {space.name!r} is not a "
                                     "quantised space; use one such as space.name=quant_ofa_mbv3_fmnist, or "
                                     "hw=local_cpu_ort for fp32")
        return RuntimeForms(space), _marking(build_layer), None if build_network is None else _marking(build_network)

    def runs_as(self, spec: Any) -> str | None:
        return runs_as(spec)


BACKENDS.add(RUNTIME, OrtInt8Backend)


class Int8LatencyModel(LatencyModel):
    """Latency of quantised architectures from an int8 ORT table: each layer priced at its runtime form's entry.

    No fallback model: a layer whose runtime form the table lacks is an :class:`UncoveredOpError` naming it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: distinct layer signatures priced, by what they run as
        self.priced_as: dict[str, int] = {}

    @classmethod
    def from_int8_profile(cls, profile: HardwareProfile, *, strict: bool = False) -> Int8LatencyModel:
        if profile.meta.runtime != RUNTIME:
            raise ProfileFormatError(f"hw=local_cpu_int8 needs a table measured with runtime {RUNTIME!r}; this one "
                                     f"was measured with {profile.meta.runtime!r} (build one with `python -m "
                                     "nas.profile hw=local_cpu_int8 space.name=<quantised space>`)")
        domain = Domain.of(profile.specs().values(), batch=profile.meta.batch,
                           source=f"int8 profile measured for space {profile.meta.space!r}")
        return cls(profile.meta, profile.entries, None, domain=domain, strict=strict)

    def coverage(self, space: Any) -> tuple[int, int]:
        keys = {s.key() for s in RuntimeForms(space).layer_table().specs()}
        return sum(k in self.table for k in keys), len(keys)

    def _price(self, specs: Sequence[LayerSpec]) -> LayerPrices:
        forms = [runtime_form(s) for s in specs]
        missing = [(s, f) for s, f in zip(specs, forms) if f.key() not in self.table]
        if missing:
            s, f = missing[0]
            raise UncoveredOpError(
                f"int8 profile {self.meta.name!r} (space {self.meta.space!r}) has no entry for op {s.key()!r}, which "
                f"runs as {runs_as(s)} (measured signature {f.key()!r}); {len(missing)} such layer(s). Build the "
                "table for this space: python -m nas.profile hw=local_cpu_int8 space.name=<quantised space>")
        for s in specs:
            self.priced_as[runs_as(s)] = self.priced_as.get(runs_as(s), 0) + 1
        return super()._price(forms)

    def runs_as_of(self, space: Any, arch: Any) -> str:
        """What an architecture's quantised layers run as: ``int8``, or ``int8 (W2-6 A4-8 held in int8)`` (the
        ranges of its bit-widths below 8 that run in the int8 kernels)."""
        narrow = {wa for s in space.layers(arch) for wa in s.qbits if wa != (NATIVE_BITS, NATIVE_BITS)}
        if not narrow:
            return "int8"
        w, a = {p[0] for p in narrow}, {p[1] for p in narrow}
        return f"int8 (W{_span(w)} A{_span(a)} held in int8)"

    def pricing_note(self) -> str:
        kinds = {"fp32": 0, "int8 (W8A8)": 0, "int8 holding sub-8-bit values": 0}
        for kind, n in self.priced_as.items():
            kinds["fp32" if kind == "fp32" else "int8 (W8A8)" if kind == "int8" else
                  "int8 holding sub-8-bit values"] += n
        text = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
        narrow = kinds["int8 holding sub-8-bit values"]
        return (f"{super().pricing_note()}; distinct layer signatures priced by what ONNX Runtime runs them as: "
                f"{text or 'none'}" + (f" (the {narrow} with bits below 8 run in the int8 kernels at int8 cost: "
                                       "no sub-8-bit speed-up)" if narrow else ""))


def _span(bits: set[int]) -> str:
    return str(min(bits)) if len(bits) == 1 else f"{min(bits)}-{max(bits)}"


def local_cpu_int8(path: str | Path = DEFAULT_INT8_PROFILE, *, strict: bool = False) -> Int8LatencyModel:
    """This machine's CPU in ONNX Runtime int8, from ``python -m nas.profile hw=local_cpu_int8``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no hardware profile at {path}; build it with `python -m nas.profile "
                               "hw=local_cpu_int8 space.name=<quantised space, e.g. quant_ofa_mbv3_fmnist>`")
    return Int8LatencyModel.from_int8_profile(HardwareProfile.load(path), strict=strict)
