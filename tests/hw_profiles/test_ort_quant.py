"""hw=local_cpu_int8: quantised layers timed in ONNX Runtime's int8 kernels (built by the real command on a tiny
quantised space), priced by what they run as, never at a sub-8-bit speed-up; uncovered ops refused."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from hw_profiles import HardwareProfile, create_hw_profile
from hw_profiles.domain import UncoveredOpError
from hw_profiles.ort_quant import OrtInt8Backend, int8_kernels, quantize_qdq, runs_as, runtime_form
from hw_profiles.profile import ProfileFormatError
from hw_profiles.validation import _calibration_networks
from search_spaces import create_space
from search_spaces.layers import LayerSpec
from supernets.static import build_layer

ROOT = Path(__file__).resolve().parents[2]
TINY = {"resolutions": [28], "kernels": [3], "expands": [2, 4], "depths": [1]}


def _space():
    return create_space("quant_ofa_mbv3_tiny", base_kwargs={k: tuple(v) for k, v in TINY.items()},
                        w_bits=(4, 8), a_bits=(4, 8))


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """The README command on a tiny quantised space (16 runtime forms), few repeats."""
    out = tmp_path_factory.mktemp("int8") / "int8.json"
    base = "{" + ", ".join(f"{k}: {v}" for k, v in TINY.items()) + "}"
    cmd = [sys.executable, "-m", "nas.profile", "hw=local_cpu_int8", "space.name=quant_ofa_mbv3_tiny",
           f"+space.kwargs.base_kwargs={base}", "+space.kwargs.w_bits=[4,8]", "+space.kwargs.a_bits=[4,8]",
           f"out={out}", "hw.build.repeats=5", "hw.build.warmup=2", "hw.build.calibration_nets=3",
           "hw.build.passes=2", "hw.build.calibration_processes=2",  # the yaml's 3 less one: the suite's time
           "hydra.run.dir=" + str(out.parent / "hydra")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "16 layers, 16 measured now" in r.stdout
    return out


def test_entries_are_runtime_forms_with_runs_as(table: Path) -> None:
    doc = json.loads(table.read_text())
    assert doc["meta"]["runtime"] == "onnxruntime_int8"
    # the int8 calibration networks went to fresh processes too (the marked modules pickle, the backend is recreated)
    assert doc["meta"]["calibration"]["conditions"]["process"] == "fresh"
    # read as the yaml says: each figure its fastest pass's (layers of 2 passes, calibration nets of 2 processes)
    assert doc["meta"]["calibration"]["conditions"]["estimate"] == "fastest"
    assert "the fastest pass's runs" in doc["meta"]["method"]
    assert all(e["count"] == 5 for e in doc["entries"].values())  # one pass's 5 runs, not both passes' 10
    assert doc["meta"]["calibration"]["conditions"]["process_spread"] is not None
    # the joint (arch, policy) calibration networks are stored so a validation rebuilds them (the machine's speed)
    assert len(_calibration_networks(_space(), doc["meta"]["calibration"])) == 3
    kinds = {k: e["runs_as"] for k, e in doc["entries"].items()}
    assert set(kinds.values()) == {"int8", "fp32"}
    for key, kind in kinds.items():  # a conv layer is measured only in its W8A8 form; pooling in fp32
        assert (kind == "int8") == ("-q:w8a8" in key)
        assert "w4" not in key and "a4" not in key
    assert HardwareProfile.load(table).entries[next(iter(kinds))].runs_as in ("int8", "fp32")


def test_sub_8_bit_policy_priced_as_the_int8_kernels_it_runs_in(table: Path) -> None:
    space, model = _space(), create_hw_profile("local_cpu_int8", path=table)
    model.check_space(space)  # the table covers the space's runtime forms
    arch = space.base.sample(np.random.default_rng(0))
    w8, w4 = space.policy_for(arch, 8, 8), space.policy_for(arch, 4, 4)
    cost = model(space, [w8, w4])
    assert cost[0] == cost[1] > 0  # no fictitious speed-up for 4 bits
    report = model.evaluate(space, w4)
    assert all(c.source == "table" for c in report.layers)
    assert any(runs_as(s) == "int8 (W4A4 held in int8)" for s in space.layers(w4))
    assert model.runs_as_of(space, w4) == "int8 (W4 A4 held in int8)" and model.runs_as_of(space, w8) == "int8"
    assert "int8 holding sub-8-bit values" in model.pricing_note() and "no sub-8-bit speed-up" in model.pricing_note()


def test_table_lacking_an_op_names_it(table: Path, tmp_path: Path) -> None:
    space = _space()
    arch = space.policy_for(space.base.max_arch(), 4, 8)
    victim = next(s for s in space.layers(arch) if s.op == "mbconv")
    profile = HardwareProfile.load(table)
    entries = {k: v for k, v in profile.entries.items() if k != runtime_form(victim).key()}
    replace(profile, entries=entries).save(tmp_path / "holey.json")
    model = create_hw_profile("local_cpu_int8", path=tmp_path / "holey.json")
    with pytest.raises(UncoveredOpError, match="no entry for op") as err:
        model(space, [arch])
    assert victim.key() in str(err.value) and "runs as int8 (W4A8 held in int8)" in str(err.value)


def test_fp32_table_is_refused(table: Path, tmp_path: Path) -> None:
    profile = HardwareProfile.load(table)
    replace(profile, meta=replace(profile.meta, runtime="onnxruntime")).save(tmp_path / "fp32.json")
    with pytest.raises(ProfileFormatError, match="needs a table measured with runtime 'onnxruntime_int8'"):
        create_hw_profile("local_cpu_int8", path=tmp_path / "fp32.json")


def test_float_space_is_refused_by_the_int8_builder() -> None:
    with pytest.raises(ProfileFormatError, match="not a quantised space"):
        OrtInt8Backend().forms(create_space("ofa_mbv3_tiny"), build_layer, None)


def test_quantize_qdq_runs_as_qlinear_conv(tmp_path: Path) -> None:
    spec = LayerSpec("mbconv", 14, 16, 16, kernel=3, stride=1, mid_c=32, act="relu")
    module = build_layer(spec).eval()
    backend = OrtInt8Backend()
    x = torch.randn(*spec.input_shape(2), generator=torch.Generator().manual_seed(0))
    blob = quantize_qdq(backend.to_onnx(module, x), [x.numpy()])
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert "QLinearConv" in ops
    with torch.no_grad():
        ref = module(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()  # int8 computes the same layer


def test_kernels_follow_what_this_cpu_computes_exactly() -> None:
    assert int8_kernels(flags={"avx2", "fma"})[0] == "u8u8" or platform.machine() not in ("x86_64", "AMD64")
    for vnni in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert int8_kernels(flags={"avx2", vnni})[0] == "u8s8"
    assert int8_kernels("u8u8", flags={"avx512_vnni"}) == ("u8u8", "int8_kernels=u8u8 as given")
    with pytest.raises(ValueError, match=r"int8_kernels must be one of \('auto', 'u8s8', 'u8u8'\), got 's8s8'"):
        int8_kernels("s8s8")


def _dequantised(m: onnx.ModelProto) -> tuple[dict[str, np.ndarray], set[str]]:
    """(every integer weight as the float values it stands for, the zero points' integer types) of a QDQ model."""
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    weights, types = {}, set()
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            types.add(str(inits[n.input[2]].dtype))
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype != np.int32:
            q, scale, zp = inits[n.input[0]], inits[n.input[1]], inits[n.input[2]]
            shape = (-1,) + (1,) * (q.ndim - 1) if scale.ndim else ()
            weights[n.output[0]] = (q.astype(np.float64) - zp.astype(np.float64).reshape(shape)) * scale.reshape(shape)
    return weights, types


@pytest.mark.parametrize("a_symmetric", [False, True])
def test_u8u8_is_the_same_grid_and_computes_the_layer(a_symmetric: bool) -> None:
    """u8u8 storage (every int8 tensor as uint8 + 128) stands for exactly the u8s8 model's weights, and computes the
    layer within the quantisation's error on any CPU (u8s8 does only with VNNI: 11-56 % off on AVX2 here)."""
    spec = LayerSpec("mbconv", 14, 16, 16, kernel=3, stride=1, mid_c=32, act="relu")
    module = build_layer(spec).eval()
    x = torch.randn(*spec.input_shape(2), generator=torch.Generator().manual_seed(0))
    fp32 = OrtInt8Backend().to_onnx(module, x)
    models = {k: onnx.load_from_string(quantize_qdq(fp32, [x.numpy()], a_symmetric=a_symmetric, kernels=k))
              for k in ("u8s8", "u8u8")}
    (s8, s8_types), (u8, u8_types) = _dequantised(models["u8s8"]), _dequantised(models["u8u8"])
    assert s8 and s8.keys() == u8.keys() and all(np.array_equal(s8[k], u8[k]) for k in s8)
    assert "int8" in s8_types and u8_types - {"int32"} == {"uint8"}  # (int32: the biases)
    with torch.no_grad():
        ref = module(x).numpy()
    sess = ort.InferenceSession(models["u8u8"].SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"input": x.numpy()})[0] - ref).max() < 0.05 * np.abs(ref).max()


def test_search_front_shows_what_points_run_as(table: Path) -> None:
    """The search front table's 'runs as' column, from the int8 profile's prices of real archs."""
    from nas.search.app import front_table
    from nas.search.results import SearchResult

    space, model = _space(), create_hw_profile("local_cpu_int8", path=table)
    arch = space.base.max_arch()
    joints = [space.policy_for(arch, 8, 8), space.policy_for(space.base.min_arch(), 4, 8)]
    lat = model(space, joints)
    # both points on the front whatever this machine timed (the labels, not the prices, are under test)
    values = np.array([[90.0, float(lat.max()) + 1e-3], [80.0, float(lat.min())]])
    result = SearchResult(space=space, objectives=[{"name": "top1", "direction": "max", "expensive": True},
                                                   {"name": "latency_ms", "direction": "min", "expensive": False}],
                          constraints=[], metric_names=["top1", "latency_ms"], X=space.encode_many(joints),
                          values=values, F=values * np.array([-1.0, 1.0]), G=np.zeros((2, 0)))
    text = front_table(result, labels=lambda r: model.runs_as_of(space, space.from_dict(r["arch"])))
    rows = text.splitlines()
    assert rows[0].endswith("runs as")
    assert rows[2].endswith("  int8") and rows[3].endswith("int8 (W4 A8 held in int8)")


def test_spatial_means_run_as_int8_global_pool(tmp_path: Path) -> None:
    """``x.mean((2, 3))`` (squeeze-excitation, classifier head) exports as ReduceMean, which ORT's quantiser leaves in
    fp32; quantize_qdq rewrites it as GlobalAveragePool so ORT runs it as QLinearGlobalAveragePool, same values."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.gate = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 1)
            self.head = torch.nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem(x))
            x = x * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))  # squeeze-excitation: keepdim
            return self.head(x.mean((2, 3)))  # head: the mean drops the spatial axes

    torch.manual_seed(0)
    module, x = Net().eval(), torch.randn(8, 3, 16, 16)
    fp32 = OrtInt8Backend().to_onnx(module, x)
    assert [n.op_type for n in onnx.load_from_string(fp32).graph.node].count("ReduceMean") == 2
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    sess = ort.InferenceSession(quantize_qdq(fp32, [x.numpy()]), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "ReduceMean" not in ops and ops.count("QLinearGlobalAveragePool") == 2
    with torch.no_grad():
        ref = module(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
