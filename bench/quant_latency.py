"""Exported int8 model vs fp32 in ONNX Runtime: latency ratio at batch 1 and batch 32 (issue #21's export goal).

Two networks, each exported fp32 (``torch.onnx``, dynamic batch) and int8 (the same model through
:func:`hw_profiles.ort_quant.quantize_qdq`, i.e. ``nas.export format=onnx_int8``'s path: ORT's ``quantize_static``,
QDQ, fused by ORT into QLinearConv):

- ``224``: the largest OFA-MobileNetV3 w1.0 subnet at 224 px (space ``ofa_mbv3``, random weights, random calibration);
- ``fmnist``: the largest subnet of the embedded Fashion-MNIST supernet (trained weights, 32 px, real calibration).

Protocol: one intra-op thread (the machine is shared; ``cpu`` clock = the calling thread's CPU time, which ORT
computes on with one thread, so preemption by other processes is not counted), fp32 and int8 sessions timed
interleaved; each repeat builds fresh sessions and takes medians; speed-up = fp32 / int8 median; mean and 95 %
t-interval over ``--repeats`` repeats. Prints the CPU's ISA flags and load average, and, where int8 is below 1.5x at
batch 1 on 224 px, ORT's own per-operator profile of both models: depthwise convs, other convs and the rest in fp32
and int8, and the speed-up bound if every non-conv op were free (what limits the figure).

    python bench/quant_latency.py [--repeats 5] [--quick]

Ends with ``RESULT int8_b1_speedup_224=.. int8_b32_speedup_224=.. int8_b1_speedup_fmnist=..
int8_b32_speedup_fmnist=..``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw_profiles.backends import time_interleaved  # noqa: E402
from hw_profiles.ort_quant import int8_kernels, quantize_qdq  # noqa: E402
from search_spaces import create_space  # noqa: E402
from supernets.static import build_network  # noqa: E402

EMBEDDED = Path(__file__).resolve().parents[1] / "nas" / "embedded" / "ofa_mbv3_fmnist"
ISA = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_int8")


def isa_flags() -> dict[str, bool]:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return {}
    flags = set(line.split(":", 1)[1].split())
    return {f: f in flags for f in ISA}


def to_onnx(module: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(*shape),), buf, input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False, dynamic_axes={"input": {0: "b"}, "output": {0: "b"}})
    return buf.getvalue()


def session(model: bytes, profile: str | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        opts.enable_profiling, opts.profile_file_prefix = True, profile
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def networks(quick: bool) -> dict[str, tuple[bytes, bytes, tuple[int, ...]]]:
    """name -> (fp32 ONNX, int8 ONNX, per-image input shape)."""
    out = {}
    torch.manual_seed(0)
    space = create_space("ofa_mbv3", width_mult=1.0)
    arch = space.max_arch()  # kernel 7, expand 6, depth 4 everywhere, 224 px
    shape = space.input_shape(arch)
    assert shape == (3, 224, 224), shape
    net = build_network(space.layers(arch))
    fp32 = to_onnx(net, (1, *shape))
    calib = [np.random.default_rng(i).standard_normal((4, *shape)).astype(np.float32) for i in range(2 if quick else 4)]
    out["224"] = (fp32, quantize_qdq(fp32, calib), shape)

    from nas.data import create_data
    from nas.resolve import load_trained_supernet

    sup = load_trained_supernet(EMBEDDED).eval()
    arch = sup.space.max_arch()
    module = sup.export(arch).module.eval()
    res = sup.space.input_shape(arch)[1]
    imgs = create_data("fashion_mnist").calibration_batches(200, 100, 0, "train")
    calib = [torch.nn.functional.interpolate(x, size=(res, res), mode="bilinear").numpy() for x in imgs]
    fp32 = to_onnx(module, (1, 1, res, res))
    out["fmnist"] = (fp32, quantize_qdq(fp32, calib), (1, res, res))
    return out


def speedups(fp32: bytes, int8: bytes, shape: tuple[int, ...], batch: int, *, repeats: int, runs: int,
             seed: int) -> tuple[np.ndarray, float, float]:
    """fp32/int8 median ratio per repeat, and the last repeat's fp32 and int8 medians (ms)."""
    x = np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)
    ratios, last = [], (0.0, 0.0)
    for r in range(repeats):
        sessions = [session(fp32), session(int8)]
        runners = [lambda s=s: s.run(None, {"input": x}) for s in sessions]
        t = np.median(time_interleaved(runners, warmup=3, repeats=runs, seed=seed + r, clock="cpu"), axis=1)
        ratios.append(t[0] / t[1])
        last = (float(t[0]), float(t[1]))
    return np.array(ratios), *last


def interval(v: np.ndarray) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(half)


def op_profile(model: bytes, shape: tuple[int, ...], runs: int = 10) -> dict[str, float]:
    """A model's batch-1 kernel time (ms per run, median over ``runs``) per op type from ORT's profiler; convs split
    into depthwise (``... dw``) and the rest, since ORT's int8 and fp32 kernels differ most there."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(model, profile=os.path.join(tmp, "ort"))
        x = np.zeros((1, *shape), np.float32)
        for _ in range(runs):
            sess.run(None, {"input": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[(e["name"], e["args"].get("op_name", "?"))].append(e["dur"])
    out: dict[str, float] = defaultdict(float)
    for (name, op), durs in per.items():
        kind = op + (" dw" if "Conv" in op and "depthwise" in name else "")
        out[kind] += float(np.median(durs)) / 1000
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def limit_report(fp32: bytes, int8: bytes, shape: tuple[int, ...]) -> str:
    """Where int8 loses: fp32 vs int8 kernel time of the depthwise convs, the other convs and everything else, and
    the speed-up int8 would reach if every non-conv op (quantise / dequantise, activations, SE) were free."""
    a, b = op_profile(fp32, shape), op_profile(int8, shape)

    def split(p: dict[str, float]) -> tuple[float, float, float]:
        dw = sum(v for k, v in p.items() if k.endswith("Conv dw"))
        conv = sum(v for k, v in p.items() if "Conv" in k and not k.endswith(" dw"))
        return dw, conv, sum(p.values()) - dw - conv

    (fd, fc, fo), (qd, qc, qo) = split(a), split(b)
    top = ", ".join(f"{k} {v:.2f}" for k, v in list(b.items())[:8])
    return (f"   kernel time, fp32 -> int8 (ms): depthwise convs {fd:.2f} -> {qd:.2f} (int8 {fd / qd:.2f}x), "
            f"other convs {fc:.2f} -> {qc:.2f} (int8 {fc / qc:.2f}x), non-conv ops {fo:.2f} -> {qo:.2f}\n"
            f"   int8 by op type (ms): {top}\n"
            f"   bound with every non-conv op free: {(fd + fc + fo) / (qd + qc):.2f}x; ORT's int8 depthwise kernel is "
            f"slower than its fp32 one on this CPU, so the depthwise convs cap the figure")


def graph_ops(model: bytes) -> tuple[dict[str, int], list[str]]:
    """Op types of the model after ORT's optimisations (QDQ fused into QLinear* where ORT can), and the convs ORT
    left in fp32 (name, groups, kernel)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        counts: dict[str, int] = defaultdict(int)
        floats = []
        for n in onnx.load(opts.optimized_model_filepath).graph.node:
            counts[n.op_type] += 1
            if n.op_type == "Conv":
                a = {x.name: list(x.ints) or x.i for x in n.attribute}
                name = n.name.replace("/conv/Conv", "")
                floats.append(f"{name} (groups {a.get('group', 1)}, k {a.get('kernel_shape')})")
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])), floats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 repeats, fewer runs (a smoke run)")
    args = ap.parse_args()
    repeats = 3 if args.quick else max(3, args.repeats)
    print(f"CPU ISA flags: {isa_flags()}; load average {os.getloadavg()}; {os.cpu_count()} CPUs; "
          f"onnxruntime {ort.__version__}; int8 kernels {int8_kernels()[0]} ({int8_kernels()[1]}); "
          "1 intra-op thread, cpu clock")
    results: dict[str, float] = {}
    for name, (fp32, int8, shape) in networks(args.quick).items():
        for batch in (1, 32):
            runs = (10 if args.quick else 30) if batch == 1 else (3 if args.quick else 8)
            if name == "fmnist":
                runs *= 3
            ratios, t32, t8 = speedups(fp32, int8, shape, batch, repeats=repeats, runs=runs, seed=batch)
            mean, half = interval(ratios)
            results[f"int8_b{batch}_speedup_{name}"] = mean
            print(f"{name:>6} batch {batch:>2}: fp32 {t32:8.2f} ms, int8 {t8:8.2f} ms; int8 speed-up {mean:.2f}x "
                  f"+- {half:.2f} (95% t-interval, {repeats} repeats: {np.round(ratios, 2).tolist()})")
        if name == "224":
            ops, floats = graph_ops(int8)
            print(f"   int8 graph after ORT fusion: {ops}")
            print(f"   convs ORT left as DequantizeLinear + fp32 Conv (no QLinearConv fusion): {floats}")
            if results["int8_b1_speedup_224"] < 1.5:
                print("   int8 < 1.5x at batch 1 on 224 px; ORT's profiler, batch 1:")
                print(limit_report(fp32, int8, shape))
    print(f"load average at the end {os.getloadavg()}")
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
