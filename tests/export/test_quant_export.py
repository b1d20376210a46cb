"""``nas.export format=...`` of quantisation policies, run as the README's commands on a quantised Fashion-MNIST
supernet (the embedded float supernet with L_p-initialised EQ-Net quantisers, tests/export/quant_supernet.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hw_profiles.ort_quant import int8_kernels
from nas.export_subnet import export_arch
from search_spaces import create_space
from search_spaces.errors import NasError
from supernets.quant.int8 import default_engine
from tests.export.quant_supernet import EMBEDDED, make_quant_supernet

ROOT = Path(__file__).resolve().parents[2]
SPACE = create_space("quant_ofa_mbv3_fmnist")


def _arch(arch, w_bits: int, a_bits: int = 8) -> str:
    return json.dumps(SPACE.to_dict(SPACE.policy_for(arch, w_bits, a_bits)))


def _export(tmp: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nas.export", *args, f"hydra.run.dir={tmp / 'hydra'}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def qnet(tmp_path_factory) -> Path:
    return make_quant_supernet(tmp_path_factory.mktemp("qnet") / "supernet")


def test_onnx_int8_matches_fake_quant_top1_on_the_test_set(qnet: Path, tmp_path: Path) -> None:
    """The whole Fashion-MNIST test set (10000 images), smallest subnet at W8A8 (fast; any subnet works)."""
    out = tmp_path / "int8"
    r = _export(tmp_path, f"checkpoint={qnet}", "data=fashion_mnist", f"out={out}", "format=onnx_int8",
                "calib_images=400", f"arch={_arch(SPACE.base.min_arch(), 8)}")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    exp = meta["quantization"]["export"]
    assert meta["measured_on"]["images"] == 10000
    assert abs(exp["measured_test_top1"] - meta["measured_test_top1"]) <= 0.3, (exp, meta["measured_test_top1"])
    assert meta["measured_test_top1"] > 80
    assert {(q["w_bits"], q["a_bits"], q["w_granularity"], q["w_symmetric"]) for q in meta["quantization"]["layers"]
            } == {(8, 8, "per_tensor", True)}
    blob = (out / "model_int8.onnx").read_bytes()
    assert exp["sha256"] == __import__("hashlib").sha256(blob).hexdigest()
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])  # runs with onnxruntime alone
    x = np.random.default_rng(0).standard_normal((3, 1, 24, 24)).astype(np.float32)
    assert sess.run(None, {"input": x})[0].shape == (3, 10)  # any batch size
    assert "QuantizeLinear" in {n.op_type for n in __import__("onnx").load_from_string(blob).graph.node}
    # the integer kernels this CPU computes exactly (u8u8 without VNNI), recorded and printed
    assert (exp["kernels"], exp["kernels_why"]) == int8_kernels()
    assert f"onnx_int8 model model_int8.onnx ({exp['kernels']} kernels): measured test top-1" in r.stdout


def test_torch_int8_writes_a_torchscript_int8_module(qnet: Path, tmp_path: Path) -> None:
    out = tmp_path / "t8"
    r = _export(tmp_path, f"checkpoint={qnet}", "data=fashion_mnist", "data.kwargs.test_limit=500", f"out={out}",
                "format=torch_int8", "calib_images=200", f"arch={_arch(SPACE.base.min_arch(), 8)}")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    exp = meta["quantization"]["export"]
    assert exp["format"] == "torch_int8" and abs(exp["measured_test_top1"] - meta["measured_test_top1"]) <= 2.0
    assert exp["engine"] == default_engine() and f"engine = {default_engine()!r}" in exp["engine_why"]
    module = torch.jit.load(str(out / "model_int8.pt"))
    assert any("quantized" in str(n.kind()) for n in module.inlined_graph.nodes())  # real int8 kernels
    assert module(torch.zeros(2, 1, 24, 24)).shape == (2, 10)


def test_sub_8_bit_policy_refused_or_falls_back(qnet: Path, tmp_path: Path) -> None:
    arch = _arch(SPACE.base.min_arch(), 4, 6)
    r = _export(tmp_path, f"checkpoint={qnet}", "data=fashion_mnist", f"out={tmp_path / 'a'}", "format=onnx_int8",
                f"arch={arch}")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "runs 8-bit integer kernels only" in r.stderr and "first.dw (W4A6)" in r.stderr
    assert "fallback=fake_quant" in r.stderr and not (tmp_path / "a").exists()
    r = _export(tmp_path, f"checkpoint={qnet}", "data=fashion_mnist", "data.kwargs.test_limit=200",
                f"out={tmp_path / 'b'}", "format=onnx_int8", "fallback=fake_quant", "calib_images=200",
                f"arch={arch}")
    assert r.returncode == 0, r.stderr[-3000:]
    exp = json.loads((tmp_path / "b" / "metadata.json").read_text())["quantization"]["export"]
    assert exp["format"] == "fake_quant" and exp["requested_format"] == "onnx_int8" and "W4A6" in exp["fallback_reason"]
    assert not (tmp_path / "b" / "model_int8.onnx").exists() and (tmp_path / "b" / "model.onnx").exists()
    assert "fell back to fake_quant" in r.stdout


@pytest.mark.parametrize("case, message", [
    ("calib", "calib_images=100 is smaller than one batch (calib_batch=200)"),
    ("format", "format='int4'; allowed: ['fake_quant', 'onnx_int8', 'torch_int8']"),
    ("wrong_arch", "is not one for its architecture"),
    ("float_supernet", "is not quantised"),
    ("kernels", "int8_kernels='s8s8'; allowed: ['auto', 'u8s8', 'u8u8']"),
])
def test_bad_export_input_is_one_clear_error(qnet: Path, tmp_path: Path, case: str, message: str) -> None:
    """In process (the library raises a NasError naming the value); the CLI prints it as one line, as above."""
    arch, ckpt, kw = _arch(SPACE.base.max_arch(), 8), qnet, {"fmt": "onnx_int8"}
    if case == "calib":
        kw["calib_images"] = 100
    if case == "format":
        kw["fmt"] = "int4"
    if case == "wrong_arch":
        d = json.loads(arch)
        d["arch"] = SPACE.base.to_dict(SPACE.base.min_arch())  # the max arch's policy on another architecture
        arch = json.dumps(d)
    if case == "kernels":
        kw["int8_kernels"] = "s8s8"
    if case == "float_supernet":
        ckpt, arch = EMBEDDED, json.dumps(SPACE.base.to_dict(SPACE.base.min_arch()))
    with pytest.raises(NasError) as err:
        export_arch(ckpt, arch, tmp_path / "x", data={"name": "fashion_mnist"}, **kw)
    assert message in str(err.value) and not (tmp_path / "x").exists()
