"""Export formats of a quantisation policy (``nas.export format=...``; a library of :mod:`nas.export_subnet`).

- ``fake_quant`` (default): the static torch module with the policy's fake quantisers (any bits), as always;
- ``onnx_int8``: a real int8 ONNX model (``model_int8.onnx``) for an all-W8A8 policy: the fake-quant subnet with its
  weights on the learned 8-bit grids, exported as fp32 and statically quantised by ONNX Runtime's own tooling
  (``quantize_static``, QDQ: ORT fuses it into QLinearConv / QLinearMatMul kernels) with the policy's weight
  granularity and symmetries, activation ranges calibrated on training images; its top-1 is measured in ORT.
  ``int8_kernels=auto`` (default) keeps ORT's int8 weights (``u8s8``) for a CPU with VNNI and stores every int8
  tensor as uint8 + 128 (``u8u8``, the same grid) for one without, where ORT's int8 kernels saturate
  (:func:`hw_profiles.ort_quant.int8_kernels`); ``u8s8`` / ``u8u8`` choose for another deployment CPU; the metadata
  records which and why;
- ``torch_int8``: torch.ao's int8 module (:func:`supernets.quant.int8.to_int8`), traced to TorchScript
  (``model_int8.pt``, loadable with ``torch.jit.load`` and no engine code) with its measured top-1, on the engine
  :func:`supernets.quant.int8.default_engine` picks for this CPU (recorded: set
  ``torch.backends.quantized.engine`` to it before loading).

A policy below 8 bits has no int8 kernel: it is refused, naming the layers, unless ``fallback=fake_quant`` asks
for the fake-quant module instead (the metadata then says so). Metadata records every layer's bits, granularity
and symmetry.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.errors import BadInputError
from search_spaces.quant import JointArch, JointSpace

__all__ = ["FORMATS", "FALLBACKS", "QuantExportError", "policy_metadata", "check_format", "check_policy",
           "int8_artifact"]

FORMATS = ("fake_quant", "onnx_int8", "torch_int8")
FALLBACKS = (None, "fake_quant")
_FILES = {"onnx_int8": "model_int8.onnx", "torch_int8": "model_int8.pt"}


class QuantExportError(BadInputError):
    """A quantisation policy cannot be exported in the requested format."""


def check_format(fmt: str, fallback: str | None, space: Any, *, data: Any, calib_images: int,
                 calib_batch: int, int8_kernels: str = "auto") -> None:
    """Refuse, before any slow work, a format/fallback/space/data combination that cannot be exported."""
    from hw_profiles.ort_quant import KERNELS

    if fmt not in FORMATS:
        raise QuantExportError(f"format={fmt!r}; allowed: {list(FORMATS)}")
    if int8_kernels not in KERNELS:
        raise QuantExportError(f"int8_kernels={int8_kernels!r}; allowed: {list(KERNELS)} (auto: by this CPU)")
    if fallback not in FALLBACKS:
        raise QuantExportError(f"fallback={fallback!r}; allowed: null (refuse) or 'fake_quant'")
    if fmt == "fake_quant":
        return
    if not isinstance(space, JointSpace):
        raise QuantExportError(f"format={fmt} exports a quantisation policy, but the supernet's space {space.name!r} "
                               "is not quantised; use a quantised supernet (e.g. search_space=quant_ofa_mbv3_fmnist "
                               "supernet=quant) or format=fake_quant")
    if not data:
        raise QuantExportError(f"format={fmt} needs data=<data group> (e.g. data=fashion_mnist): training images "
                               "calibrate the int8 activation ranges, and the test split measures its top-1")
    if calib_images < calib_batch:
        raise QuantExportError(f"calib_images={calib_images} is smaller than one batch (calib_batch={calib_batch}); "
                               f"the int8 calibration needs at least one full batch: give calib_images >= "
                               f"{calib_batch} or a smaller calib_batch")


def check_policy(fmt: str, fallback: str | None, space: JointSpace, joint: JointArch) -> list[str]:
    """The layers below W8A8 (empty: none); for an int8 format without ``fallback=fake_quant`` they are refused."""
    narrow = _narrow(space, joint) if fmt != "fake_quant" else []
    if narrow and fallback != "fake_quant":
        shown = ", ".join(narrow[:6]) + (f" and {len(narrow) - 6} more" if len(narrow) > 6 else "")
        raise QuantExportError(
            f"format={fmt} runs 8-bit integer kernels only, but {len(narrow)} layer(s) of the policy are narrower: "
            f"{shown}; allowed: every layer W8A8. Export an all-8-bit policy, or pass fallback=fake_quant to write "
            "the fake-quant module (any bits) instead")
    return narrow


def policy_metadata(space: JointSpace, joint: JointArch) -> dict[str, Any]:
    """Bits, weight granularity and symmetries of every running layer (slot name), plus the policy id."""
    layers = [{"slot": space.slots[i], "w_bits": q.w_bits, "a_bits": q.a_bits, "w_granularity": q.w_granularity,
               "w_symmetric": q.w_symmetric, "a_symmetric": q.a_symmetric, "a_granularity": q.a_granularity}
              for i, q in enumerate(joint.policy.layers) if q is not None]
    return {"policy_id": joint.policy.id, "layers": layers, "fixed_slots": [space.slots[i] for i in space.fixed_slots]}


def _narrow(space: JointSpace, joint: JointArch) -> list[str]:
    return [f"{space.slots[i]} (W{q.w_bits}A{q.a_bits})" for i, q in enumerate(joint.policy.layers)
            if q is not None and (q.w_bits, q.a_bits) != (8, 8)]


def int8_artifact(fmt: str, fallback: str | None, space: JointSpace, joint: JointArch, module: nn.Module,
                  calib: Sequence[torch.Tensor], test: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                  *, int8_kernels: str = "auto") -> tuple[dict[str, Any], Callable[[Path], None] | None]:
    """(metadata, writer of the int8 file into the export directory) of ``module`` (the fake-quant subnet);
    ``(metadata, None)`` when a sub-8-bit policy falls back to the fake-quant module."""
    narrow = check_policy(fmt, fallback, space, joint)
    if narrow:
        return {"format": "fake_quant", "requested_format": fmt, "fallback": "fake_quant",
                "fallback_reason": f"{len(narrow)} layer(s) below W8A8 have no int8 kernel: {', '.join(narrow)}"}, None
    if fmt == "onnx_int8":
        blob, top1, runs_on = _onnx_int8(module, joint, calib, test, targets, int8_kernels)
    else:
        blob, top1, runs_on = _torch_int8(module, calib, test, targets)
    name = _FILES[fmt]
    meta: dict[str, Any] = {
        "format": fmt, "file": name, "sha256": hashlib.sha256(blob).hexdigest(), "measured_test_top1": top1,
        "calibration": {"images": sum(int(x.size(0)) for x in calib), "batches": len(calib), "split": "train",
                        "method": "MinMax" if fmt == "onnx_int8" else "observed output ranges"}, **runs_on}

    def write(out: Path) -> None:
        (Path(out) / name).write_bytes(blob)

    return meta, write


def _baked(module: nn.Module) -> nn.Module:
    """A float copy of the fake-quant subnet: each layer's weight on its learned grid, input quantisers removed
    (ORT's calibration sets the activation grids)."""
    import copy

    from supernets.quant.export import FakeQuantLayer

    net = copy.deepcopy(module).eval()
    swaps = {}
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, FakeQuantLayer):
                m.op.weight.copy_(m.quantized_weight())
                swaps[m] = m.op
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if child in swaps:
                setattr(parent, name, swaps[child])
    return net


def _onnx_int8(module: nn.Module, joint: JointArch, calib: Sequence[torch.Tensor], test: Sequence[torch.Tensor],
               targets: Sequence[torch.Tensor], kernels: str) -> tuple[bytes, float, dict[str, str]]:
    import warnings

    import onnxruntime as ort

    from hw_profiles.ort_quant import int8_kernels, quantize_qdq

    first = joint.policy.active_layers()[0]
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_baked(module), (calib[0][:1].cpu(),), buf,  # type: ignore[arg-type]
                          input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    blob = quantize_qdq(buf.getvalue(), [x.cpu().numpy() for x in calib], per_channel=first.per_channel,
                        w_symmetric=first.w_symmetric, a_symmetric=first.a_symmetric, kernels=kernels)
    chosen, why = int8_kernels(kernels)
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    top1 = _top1(lambda x: sess.run(None, {"input": x.cpu().numpy()})[0], test, targets)
    return blob, top1, {"kernels": chosen, "kernels_why": why}


def _torch_int8(module: nn.Module, calib: Sequence[torch.Tensor], test: Sequence[torch.Tensor],
                targets: Sequence[torch.Tensor]) -> tuple[bytes, float, dict[str, str]]:
    from supernets.quant.int8 import quantized_engine, to_int8

    net = to_int8(module, [x.cpu() for x in calib])
    buf = io.BytesIO()
    with quantized_engine(net.engine), torch.no_grad():
        traced = torch.jit.trace(net, calib[0][:1].cpu())
        torch.jit.save(traced, buf)
        top1 = _top1(lambda x: net(x.cpu()).numpy(), test, targets)
    return buf.getvalue(), top1, {"engine": net.engine, "engine_why": f"set torch.backends.quantized.engine = "
                                  f"{net.engine!r} before torch.jit.load (chosen for this CPU by "
                                  "supernets.quant.int8.default_engine: x86 needs AVX-512 VNNI to be exact)"}


def _top1(run: Callable[[torch.Tensor], np.ndarray], test: Sequence[torch.Tensor],
          targets: Sequence[torch.Tensor]) -> float:
    correct = total = 0
    for x, y in zip(test, targets):
        pred = np.asarray(run(x)).argmax(axis=1)
        correct += int((pred == y.cpu().numpy()).sum())
        total += int(y.numel())
    return 100.0 * correct / max(total, 1)
