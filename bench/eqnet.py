"""EQ-Net on real Fashion-MNIST: one elastic-quantisation supernet vs separate QAT per policy, and int8 latency.

Network: a fixed NAS-Bench-201 tiny cell (C=8, N=1, 28 px, 1 channel); the joint space searches only the
quantisation policy (W/A bits ``--min-bits``..8 per layer, first/last layer at 8 bits, global granularity and
symmetry sampled in training). Steps, all on the same training subset, batch and schedule:

1. full-precision pre-training (``--fp-epochs``), the starting point of everything below (EQ-Net starts from a
   pre-trained float model);
2. EQ-Net: quantisers calibrated on the first batch (L_p clipping search), then ``--epochs`` of the bit sandwich
   (highest / random / lowest bits, chained distillation, lambda 0.5) + WDR on the trainer, Adam;
3. QAT baselines: for each evaluated policy, the same float model calibrated and trained at that policy alone for
   the same ``--epochs`` (same steps and batches; a QAT step trains one subnet, an EQ-Net step three);
4. top-1 on the real test set (``--test-images``) after BN recalibration, for W8A8, W4A4, W3A3 and two seeded
   mixed-precision policies (per-channel symmetric weights, asymmetric activations), inherited from the supernet
   vs trained separately;
5. the supernet's W8A8 subnet exported to fake-quant and to real int8 (torch.ao x86 kernels): test top-1 and
   agreement of both, and interleaved median latency of the float export vs int8 at batch 1 and ``--batch``, also
   for the full-size NB201 network (C=16, N=5, 32 px) unless ``--no-big``.

Default budget: 6000 training images, 2 + 2 epochs (94 steps of 128 per phase), 2000 test images, 1 thread:
measured 297 s of CPU time (user + sys; 15 min wall on the shared, loaded 2-core machine);
``--train-images 50000 --fp-epochs 10 --epochs 10`` for a fuller run.
Ends with ``RESULT w8a8=.. w4a4=.. w3a3=.. mixed_a=.. mixed_b=.. qat_w8a8=.. qat_w4a4=.. qat_w3a3=.. fp=..
int8_top1=.. int8_agree=.. int8_speedup=..`` (top-1 in %, speedup = float / int8 latency at batch ``--batch``).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nas.data import create_data
from nas.evaluation import EvalSet, evaluate_subnets
from nas.train import TrainConfig, Trainer
from nas.train.samplers.eqnet import EQNetSampler
from nas.train.samplers.fixed import FixedArchSampler
from search_spaces import create_space
from search_spaces.quant_costs import average_bits, model_size_bytes
from supernets import create_supernet, recalibrated
from supernets.quant import calibrate, full_precision, input_shape
from supernets.quant.int8 import interleaved_latency_ms, to_int8

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
MODES = dict(w_granularity="per_channel", w_symmetric=True, a_symmetric=False)


def policies(space, min_bits: int) -> dict[str, object]:
    arch = space.fixed_arch
    base = space.policy_for(arch, 8, 8, **MODES)
    n_free = len(space.slots) - len(space.fixed_slots)
    mixed = {}
    for name, seed, choices in (("mixed_a", 1, (4, 5, 6, 7, 8)), ("mixed_b", 2, tuple(range(min_bits, 6)))):
        rng = np.random.default_rng(seed)
        mixed[name] = space.with_bits(base, rng.choice(choices, n_free).tolist(), rng.choice(choices, n_free).tolist())
    out = {f"w{b}a{b}": space.policy_for(arch, b, b, **MODES) for b in (8, 4, 3) if b >= min_bits}
    return out | mixed


def train(net, data, sampler, cfg: TrainConfig, root: Path, name: str) -> float:
    start = time.perf_counter()
    Trainer(net, data, sampler, cfg, root / name).fit()
    return time.perf_counter() - start


def top1(net, archs: list, evalset: EvalSet) -> list[float]:
    return [r["top1"] for r in evaluate_subnets(net, archs, evalset)]


def latency_rows(name: str, float_module, int8_module, shape, batches: tuple[int, ...], repeats: int) -> list[str]:
    rows = []
    for b in batches:
        x = torch.randn(b, *shape[1:])
        t = interleaved_latency_ms({"float": float_module, "int8": int8_module}, x, repeats=repeats)
        rows.append(f"| {name} | {b} | {t['float']:.2f} | {t['int8']:.2f} | {t['float'] / t['int8']:.2f}x |")
    return rows


def big_network_rows(batch: int, repeats: int) -> list[str]:
    space = create_space("quant_nb201", fixed_arch={"arch_str": CELL})
    net = create_supernet("quant", space).eval()
    joint = space.policy_for(space.fixed_arch, 8, 8, **MODES)
    shape = input_shape(space, joint.arch, 8)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    calibrate(net, x, steps=20, max_samples=4096)
    fq = net.export(joint).module.eval()
    with net.unwrapped() as inner:
        flt = inner.export(joint.arch).module.eval()
    return latency_rows("nb201 C16 N5 32px (untrained)", flt, to_int8(fq, [x]), shape, (1, batch), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-images", type=int, default=6000)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--fp-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--fp-lr", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-bits", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--no-big", action="store_true", help="skip the full-size NB201 latency measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/bench/eqnet")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = create_data("fashion_mnist", train_limit=args.train_images, val_size=1000, seed=args.seed)
    bits = list(range(args.min_bits, 9))
    space = create_space("quant_nb201_tiny", fixed_arch={"arch_str": CELL}, w_bits=bits, a_bits=bits)
    evalset = EvalSet(data, split="test", n_images=args.test_images, calib_images=500, calib_batch=250,
                      seed=args.seed)
    pols = policies(space, args.min_bits)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="run_", dir=args.out))
    common = dict(batch_size=args.batch, threads=args.threads, eval_every=0, progress=False, tensorboard=False,
                  log_every=50, checkpoint_every=0, seed=args.seed)
    fp_cfg = TrainConfig(epochs=args.fp_epochs, lr=args.fp_lr, optimizer="sgd", weight_decay=5e-5, **common)
    q_cfg = TrainConfig(epochs=args.epochs, lr=args.lr, optimizer="adam", weight_decay=0.0, **common)

    torch.manual_seed(args.seed)
    net = create_supernet("quant", space)
    w8 = pols["w8a8"]
    with full_precision(net):
        t_fp = train(net, data, FixedArchSampler(space, arch=w8), fp_cfg, root, "fp")
        fp = top1(net, [w8], evalset)[0]
    fp_state = copy.deepcopy(net.state_dict())
    t_eq = train(net, data, EQNetSampler(space, seed=args.seed), q_cfg, root, "eqnet")
    eq = dict(zip(pols, top1(net, list(pols.values()), evalset)))

    qat, t_qat = {}, {}
    calib_x = data.get("train", np.arange(256))[0]
    for name, pol in pols.items():
        torch.manual_seed(args.seed)
        base = create_supernet("quant", space)
        base.load_state_dict(fp_state)
        base.set_arch(pol)
        calibrate(base, calib_x, archs=[pol])
        t_qat[name] = train(base, data, FixedArchSampler(space, arch=pol), q_cfg, root, f"qat_{name}")
        qat[name] = top1(base, [pol], evalset)[0]

    print(f"\nEQ-Net vs separate QAT on Fashion-MNIST ({args.train_images} train / {evalset.n_images} test images; "
          f"fp {args.fp_epochs} ep {t_fp:.0f}s, EQ-Net {args.epochs} ep {t_eq:.0f}s, each QAT {args.epochs} ep "
          f"~{np.mean(list(t_qat.values())):.0f}s); full precision top-1 {fp:.2f}%\n")
    print("| policy | avg W bits | avg A bits | size (bytes) | EQ-Net inherited top-1 | separate QAT top-1 |")
    print("|---|---|---|---|---|---|")
    for name, pol in pols.items():
        print(f"| {name} | {average_bits(space, pol, 'w'):.2f} | {average_bits(space, pol, 'a'):.2f} | "
              f"{model_size_bytes(space, pol)} | {eq[name]:.2f} | {qat[name]:.2f} |")

    # int8 export of the supernet's W8A8 subnet (after BN recalibration)
    calib_batches, _ = evalset.at(28)
    with net.use(w8), recalibrated(net, calib_batches), torch.no_grad():  # BN statistics of this subnet
        exported = net.export(w8)
    fq = exported.module.eval()
    with net.unwrapped() as inner, recalibrated(inner, calib_batches):
        flt = inner.export(w8.arch).module.eval()
    q8 = to_int8(fq, calib_batches[:2])
    xs, ys = evalset.at(28)[1], evalset.targets
    with torch.no_grad():
        pf = torch.cat([fq(x).argmax(1) for x in xs])
        p8 = torch.cat([q8(x).argmax(1) for x in xs])
    y = torch.cat(ys)
    fq_top1, int8_top1 = 100 * float((pf == y).float().mean()), 100 * float((p8 == y).float().mean())
    agree = 100 * float((pf == p8).float().mean())
    print(f"\nW8A8 subnet export: fake-quant top-1 {fq_top1:.2f}%, int8 top-1 {int8_top1:.2f}%, "
          f"prediction agreement {agree:.2f}% (engine x86, torch {torch.__version__}, {args.threads} thread(s))\n")
    print("| network | batch | float ms | int8 ms | speedup |")
    print("|---|---|---|---|---|")
    shape = input_shape(space, w8.arch, args.batch)
    rows = latency_rows("nb201_tiny C8 N1 28px (trained)", flt, q8, shape, (1, args.batch), args.repeats)
    speedup = float(rows[-1].split("|")[-2].strip().rstrip("x"))
    if not args.no_big:
        rows += big_network_rows(args.batch, max(5, args.repeats // 3))
    print("\n".join(rows))
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; run directory {root}")
    keys = {k: eq[k] for k in pols} | {f"qat_{k}": qat[k] for k in pols}
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in keys.items())
          + f" fp={fp:.2f} int8_top1={int8_top1:.2f} int8_agree={agree:.2f} int8_speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
