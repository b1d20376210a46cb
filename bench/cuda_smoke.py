"""CUDA smoke check: training (AMP), DDP over nccl with a kill and a resume, evaluation, export, overhead ratios.

Each step runs the engine's own commands (``python -m nas.train``, ``torchrun ... -m nas.train``,
``python -m nas.evaluate``) in subprocesses, prints its figures and one ``PASS step N`` or ``FAIL step N`` line:

1. ``nas.train`` (sandwich rule, Fashion-MNIST OFA-MBv3) on the device with bf16 autocast, then a few fp16 steps
   (loss scaling): images/s next to the CPU figure given by ``--cpu-img-s``; the loss must be finite and fall.
2. ``torchrun --standalone --nproc_per_node=1`` with ``distributed.force=true`` (nccl on CUDA, gloo on CPU),
   SIGKILL after the first checkpoint, ``resume=true`` to the end; the checkpoint must load on CPU and its supernet
   must run there.
3. BN recalibration + evaluation of random subnets of the step-1 supernet on the device and on CPU: top-1 must agree
   within 0.1 points for every subnet.
4. Export of one subnet of the step-1 supernet: the static module must equal the supernet on CPU (allclose) and on
   the device, and its ONNX file must give the same logits in onnxruntime.
5. Elastic overhead on the device: supernet / static export for the min, mid and max OFA-MBv3 (w1.0) subnets at
   batch 64, resolution 224 (inference and a bf16 train step), timed with CUDA events after warm-up (wall clock on
   CPU); with the ``ofa`` package importable, OFA's own elastic net and ``get_active_subnet()`` in the same rounds.

``--quick --device cpu`` is the CI-size form (tests/bench/test_cuda_smoke.py runs it). Ends with
``RESULT device=.. train_img_s=.. cpu_img_s=.. ddp_resume=.. eval_max_diff=.. export_max_abs=.. infer_mid=..
train_mid=.. passed=N/5``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(cmd: list[str], *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (torchrun's workers may run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def metric_rows(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


class Smoke:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.a, self.out, self.dev = args, out, args.device
        self.results: dict[str, object] = {"device": self.dev}
        self.passed: list[bool] = []
        root = f"data.kwargs.root={args.data_root}" if args.data_root else "data.kwargs.root=null"
        self.common = ["search_space=ofa_mbv3_fmnist", "sampler=sandwich", root, "trainer.progress=false",
                       "trainer.tensorboard=false", "trainer.epochs=1", "trainer.eval_every=0",
                       "runtime.retain_memory=false"]
        self.train_dir = out / "train"

    def step(self, n: int, name: str, fn: Callable[[], str]) -> None:
        print(f"\n== step {n}: {name}", flush=True)
        t0 = time.perf_counter()
        try:
            detail = fn()
            ok = True
        except Exception as exc:  # a smoke check reports every failure and goes on
            detail, ok = f"{type(exc).__name__}: {exc}", False
        self.passed.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} step {n} ({name}, {time.perf_counter() - t0:.1f}s): {detail}", flush=True)

    # -- 1 -------------------------------------------------------------------------------------------------
    def train(self) -> str:
        steps = 4 if self.a.quick else self.a.train_steps
        bs = 32 if self.a.quick else 128
        proc = run([sys.executable, "-m", "nas.train", *self.common, f"trainer.device={self.dev}", "trainer.amp=true",
                    "trainer.amp_dtype=bfloat16", f"trainer.batch_size={bs}", f"trainer.max_steps_per_epoch={steps}",
                    "trainer.log_every=5", f"out_dir={self.train_dir}"])
        check(proc, "nas.train (bf16)")
        rows = metric_rows(self.train_dir / "metrics.csv")
        timed = rows[1:] or rows  # the first window holds cuDNN autotuning and lazy initialisation
        img_s = float(np.sum([r["img_s"] * r["elapsed_s"] for r in timed]) / np.sum([r["elapsed_s"] for r in timed]))
        first, last = rows[0]["loss_max"], rows[-1]["loss_max"]
        tail = rows[-max(1, len(rows) // 4):]  # every new subnet shape costs the device a kernel-plan build once
        steady = float(np.sum([r["img_s"] * r["elapsed_s"] for r in tail]) / np.sum([r["elapsed_s"] for r in tail]))
        print("img/s per logged window: " + " ".join(f"{r['img_s']:.0f}" for r in rows))
        self.results["train_img_s"], self.results["train_img_s_last_quarter"] = round(img_s, 1), round(steady, 1)
        print(f"bf16 sandwich steps: {steps} x batch {bs}; {img_s:.0f} img/s after the first window; "
              f"CPU reference (--cpu-img-s): {self.a.cpu_img_s or 'not given'} img/s; "
              f"largest-subnet loss {first:.3f} -> {last:.3f}")
        if not all(np.isfinite(r["loss"]) for r in rows):
            raise RuntimeError("non-finite loss")
        if not self.a.quick and not last < first:
            raise RuntimeError(f"the largest subnet's loss did not fall ({first:.3f} -> {last:.3f})")
        fp16 = self.out / "train_fp16"
        proc = run([sys.executable, "-m", "nas.train", *self.common, f"trainer.device={self.dev}", "trainer.amp=true",
                    "trainer.amp_dtype=float16", f"trainer.batch_size={bs}", "trainer.max_steps_per_epoch=4",
                    f"out_dir={fp16}"])
        check(proc, "nas.train (fp16 + loss scaling)")
        state = torch.load(fp16 / "checkpoint.pt", map_location="cpu", weights_only=True)
        scaled = state.get("scaler") is not None
        if self.dev == "cuda" and not scaled:
            raise RuntimeError("fp16 AMP on CUDA saved no GradScaler state")
        ratio = f", {img_s / self.a.cpu_img_s:.1f}x the CPU" if self.a.cpu_img_s else ""
        return f"{img_s:.0f} img/s{ratio}; fp16 run with loss scaling: {'yes' if scaled else 'no (AMP is CUDA-only)'}"

    # -- 2 -------------------------------------------------------------------------------------------------
    def ddp(self) -> str:
        from nas.checkpoints import load_checkpoint
        from supernets import supernet_from_spec

        total = 8 if self.a.quick else 60
        backend = "nccl" if self.dev == "cuda" else "gloo"
        d = self.out / "ddp"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "nas.train",
               *self.common,
               f"trainer.device={self.dev}", "trainer.batch_size=64", f"trainer.max_steps_per_epoch={total}",
               "trainer.checkpoint_every=2", "distributed.force=true", f"distributed.backend={backend}",
               f"out_dir={d}"]
        print("$ " + " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while not (d / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        for pid in process_tree(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log = proc.communicate()[0]
        if not (d / "checkpoint.pt").exists():
            raise RuntimeError(f"no checkpoint before the kill:\n{log[-3000:]}")
        killed_at = int(load_checkpoint(d / "checkpoint.pt")["step"])
        if killed_at >= total:
            raise RuntimeError(f"the kill came after the run ended (step {killed_at}); nothing was resumed")
        check(run(cmd + ["resume=true"]), "torchrun resume")
        state = load_checkpoint(d / "checkpoint.pt", "cpu")
        if not (state["finished"] and int(state["step"]) == total):
            raise RuntimeError(f"resumed run ended at step {state['step']} (finished={state['finished']}), "
                               f"expected {total}")
        net = supernet_from_spec(state["spec"])
        net.load_state_dict(state["model"])
        net.eval()
        arch = net.space.max_arch()
        with torch.no_grad(), net.use(arch):
            y = net(torch.randn(2, 1, 28, 28))
        if not torch.isfinite(y).all():
            raise RuntimeError("the resumed supernet gives non-finite logits on CPU")
        self.results["ddp_resume"] = f"{killed_at}->{total}"
        return (f"{backend}: killed after step {killed_at}, resumed to step {total}; checkpoint loads on CPU and its "
                f"supernet runs there")

    # -- 3 -------------------------------------------------------------------------------------------------
    def evaluate(self) -> str:
        n, images, calib = (2, 200, 200) if self.a.quick else (20, 2000, 1000)
        tables = {}
        for dev in dict.fromkeys([self.dev, "cpu"]):
            path = self.out / f"eval_{dev}.csv"
            check(run([sys.executable, "-m", "nas.evaluate", f"checkpoint={self.train_dir}", f"n_random={n}",
                       "extremes=false", f"device={dev}", f"n_images={images}", f"calib_images={calib}",
                       "calib_batch=200", "progress=false", "runtime.retain_memory=false", f"out={path}",
                       self.common[2]]), f"nas.evaluate on {dev}")
            with open(path, newline="") as fh:
                tables[dev] = {r["arch_id"]: float(r["top1"]) for r in csv.DictReader(fh)}
        if self.dev != "cpu":
            print(self._bn_paths())
        ours, ref = tables[self.dev], tables["cpu"]
        if set(ours) != set(ref) or len(ours) != n:
            raise RuntimeError(f"the two evaluations measured different subnets ({len(ours)} vs {len(ref)})")
        diffs = [abs(ours[k] - ref[k]) for k in ours]
        self.results["eval_max_diff"] = round(max(diffs), 3)
        tops = ", ".join(f"{ours[k]:.2f}/{ref[k]:.2f}" for k in list(ours)[:5])
        if max(diffs) > 0.1:
            raise RuntimeError(f"top-1 differs by up to {max(diffs):.2f} points between {self.dev} and cpu")
        return f"{n} subnets, top-1 {self.dev}/cpu {tops} ...; max |diff| {max(diffs):.3f} points (limit 0.1)"

    def _bn_paths(self) -> str:
        """Max |diff| device vs CPU of a batch-500 eval forward and of BN statistics after recalibration."""
        from nas.checkpoints import load_supernet
        from supernets import recalibrated

        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        net = load_supernet(self.train_dir).eval()
        arch = net.space.sample(5)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(500, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
        calib = [torch.randn(200, 1, 28, 28, generator=g) for _ in range(2)]
        outs, stats = {}, {}
        for dev in ("cpu", self.dev):
            net.to(dev)
            with torch.no_grad(), net.use(arch):
                plain = net(x.to(dev)).cpu()
                with recalibrated(net, [c.to(dev) for c in calib]):
                    recal = net(x.to(dev)).cpu()
                    stats[dev] = torch.cat([b.running_mean.cpu() for b in net.modules()
                                            if isinstance(b, torch.nn.BatchNorm2d)])
            outs[dev] = (plain, recal)
        net.cpu()
        d = [float((a - b).abs().max()) for a, b in zip(outs["cpu"], outs[self.dev])]
        return (f"diagnostic, {self.dev} vs cpu max |diff|: eval forward at batch 500 {d[0]:.2e}, after "
                f"recalibration {d[1]:.2e}, running means {float((stats['cpu'] - stats[self.dev]).abs().max()):.2e}")

    # -- 4 -------------------------------------------------------------------------------------------------
    def export(self) -> str:
        import onnxruntime as ort

        from nas.checkpoints import load_supernet
        from supernets import save_subnet

        net = load_supernet(self.train_dir).eval()
        arch = net.space.sample(3)
        ex = net.export(arch)
        res = int(getattr(arch, "r", 28))
        x = torch.randn(8, 1, res, res, generator=torch.Generator().manual_seed(0))
        worst = 0.0
        # an equivalence check: full fp32 on the device too (cuDNN's TF32 convolutions differ by ~1e-4)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        for dev in dict.fromkeys(["cpu", self.dev]):
            net.to(dev)
            module = ex.module.to(dev).eval()
            with torch.no_grad(), net.use(arch):
                a, b = net(x.to(dev)).float().cpu(), module(x.to(dev)).float().cpu()
            worst = max(worst, float((a - b).abs().max()))
            if not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
                raise RuntimeError(f"export differs from the supernet on {dev}: max |diff| {(a - b).abs().max():.2e}")
        net.cpu()
        module = ex.module.cpu()
        sub = self.out / "subnet"
        save_subnet(sub, module, ex.config, {"arch_id": net.space.arch_id(arch)}, overwrite=True,
                    onnx_input_shape=(1, 1, res, res))
        sess = ort.InferenceSession(str(sub / "model.onnx"), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        onnx_out = np.concatenate([sess.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])
        with torch.no_grad():
            ref = module(x).numpy()
        onnx_diff = float(np.abs(onnx_out - ref).max())
        self.results["export_max_abs"] = float(f"{max(worst, onnx_diff):.2e}")
        if onnx_diff > 1e-3:
            raise RuntimeError(f"onnxruntime differs from the torch export by {onnx_diff:.2e}")
        return (f"arch {net.space.arch_id(arch)}: supernet vs export max |diff| {worst:.1e} (cpu and {self.dev}); "
                f"onnxruntime vs torch {onnx_diff:.1e}")

    # -- 5 -------------------------------------------------------------------------------------------------
    def overhead(self) -> str:
        from bench.cuda_timing import overhead_table

        q = self.a.quick
        rows = overhead_table(self.dev, batch=2 if q else 64, res=32 if q else 224, repeats=2 if q else 30,
                              warmup=1 if q else 5, subnets=("mid",) if q else ("min", "mid", "max"))
        for r in rows:
            print("  " + "  ".join(f"{k}={v}" for k, v in r.items()))
        mid = next(r for r in rows if r["subnet"] == "mid")
        self.results["infer_mid"], self.results["train_mid"] = mid["infer_ratio"], mid["train_ratio"]
        if "ofa_infer_ratio" in mid:
            self.results["ofa_infer_mid"] = mid["ofa_infer_ratio"]
            self.results["ofa_train_mid"] = mid["ofa_train_ratio"]
        return "supernet / static ratios above (1.0 = no overhead)"

    def main(self) -> int:
        steps = [(1, "nas.train with AMP", self.train), (2, "torchrun DDP, kill and resume", self.ddp),
                 (3, "recalibration + evaluation vs CPU", self.evaluate),
                 (4, "export equals supernet, onnxruntime", self.export),
                 (5, "elastic overhead and throughput", self.overhead)]
        for n, name, fn in steps:
            if n in self.a.steps:
                self.step(n, name, fn)
        if self.a.cpu_img_s:
            self.results["cpu_img_s"] = self.a.cpu_img_s
        self.results["passed"] = f"{sum(self.passed)}/{len(self.passed)}"
        print("\nRESULT " + " ".join(f"{k}={v}" for k, v in self.results.items()), flush=True)
        return 0 if all(self.passed) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="CI size: a few steps, few subnets, tiny timing shapes")
    p.add_argument("--out", type=Path, default=None, help="working directory (default: a temporary one)")
    p.add_argument("--data-root", default=None, help="Fashion-MNIST idx directory (default: the Debian package's)")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--steps", type=lambda v: {int(x) for x in v.split(",")}, default={1, 2, 3, 4, 5},  # noqa: B008
                   help="comma-separated steps to run (3 and 4 need the supernet step 1 trains)")
    p.add_argument("--cpu-img-s", type=float, default=None, help="img/s of the same steps measured on CPU")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device; use --device cpu")
    if args.device.startswith("cuda"):
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}, "
              f"nccl {torch.cuda.nccl.version() if hasattr(torch.cuda, 'nccl') else '?'}", flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        return Smoke(args, args.out).main()
    with tempfile.TemporaryDirectory() as tmp:
        return Smoke(args, Path(tmp)).main()


if __name__ == "__main__":
    sys.exit(main())
