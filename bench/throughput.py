"""Training throughput of one sandwich step on OFA-MobileNetV3 (w1.0): this engine vs OFA's own code.

One step = largest + 2 random + smallest subnet (BigNAS sandwich), batch 32, resolution 128, in-place distillation
(label-smoothed CE for the largest, soft-target CE from its detached logits for the others), gradients accumulated,
one SGD step. Ours runs through :class:`nas.train.Trainer`'s step; OFA's through ``ofa`` 0.1.0 (pip, the ``bench``
extra: ``pip install -e ".[bench]"``) with the same architectures, random weights, random images, same threads.
Steps alternate (A, B, A, B, ...) so machine load affects both alike; images/s = 32 / median step. Our trainer
feeds NHWC (channels_last) batches by default; OFA trains on NCHW, and a third row times OFA's step on NHWC input
to show how much of the difference is the memory layout.
Ends with ``RESULT ours_img_s=.. ofa_img_s=.. ratio=..``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nas.data import Batch, DataModule
from nas.train import SandwichSampler, StepPlan, TrainConfig, Trainer
from search_spaces import MBv3Arch, create_space
from supernets import create_supernet

BATCH, RES = 32, 128


class RandomImages(DataModule):
    """Random 3 x 128 x 128 images and labels (throughput only)."""

    name, in_chans, n_classes, image_size = "random", 3, 1000, RES

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, RES, RES, generator=g), torch.randint(0, 1000, (n,), generator=g)

    def split_size(self, split: str) -> int:
        return len(self.y)

    def get(self, split: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.x[idx], self.y[idx]


class FixedSandwich(SandwichSampler):
    """The sandwich plan with given random children (so both implementations train the same subnets)."""

    def __init__(self, space, randoms: list[list[MBv3Arch]]) -> None:
        super().__init__(space, n_random=2, choices={"r": [RES]}, zero_init_residual=False)
        self.randoms, self.i = randoms, 0

    def plan(self, step: int, batch: Batch) -> StepPlan:
        plan = super().plan(step, batch)
        tasks = [plan.tasks[0]] + [type(t)(**{**t.__dict__, "arch": a})
                                   for t, a in zip(plan.tasks[1:-1], self.randoms[self.i % len(self.randoms)])]
        self.i += 1
        return StepPlan(tasks + [plan.tasks[-1]])


def ours(space, randoms: list[list[MBv3Arch]], threads: int) -> Callable[[], None]:
    torch.manual_seed(0)
    net = create_supernet("ofa_mbv3", space)
    data = RandomImages()
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, threads=threads, progress=False, tensorboard=False,
                      eval_every=0, checkpoint_every=0)
    trainer = Trainer(net, data, FixedSandwich(space, randoms), cfg, tempfile.mkdtemp(prefix="thr_"))
    trainer.model.train()
    x, y = data.get("train", np.arange(BATCH))
    batch = Batch(x, y, torch.arange(BATCH))
    return lambda: trainer._train_step(batch)


def _ofa_dict(arch: MBv3Arch) -> dict[str, list[int]]:
    return {"ks": [k or 3 for k in arch.ks], "e": [e or 3 for e in arch.e], "d": list(arch.d)}


def ofa_step(space, randoms: list[list[MBv3Arch]], channels_last: bool = False) -> Callable[[], None]:
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    from ofa.utils import cross_entropy_loss_with_soft_target, cross_entropy_with_label_smoothing

    torch.manual_seed(0)
    net = OFAMobileNetV3(n_classes=1000, dropout_rate=0.1, width_mult=1.0, ks_list=[3, 5, 7],
                         expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    data = RandomImages()
    x, y = data.get("train", np.arange(BATCH))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    state = {"i": 0}
    smallest = _ofa_dict(space.min_arch())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        net.set_max_net()
        net.classifier.dropout_rate = 0.1
        logits = net(x)
        cross_entropy_with_label_smoothing(logits, y, 0.1).backward()
        soft = F.softmax(logits.detach(), dim=1)
        net.classifier.dropout_rate = 0.0
        for arch in [*map(_ofa_dict, randoms[state["i"] % len(randoms)]), smallest]:
            net.set_active_subnet(**arch)
            cross_entropy_loss_with_soft_target(net(x), soft).backward()
        state["i"] += 1
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ofa-channels-last", action=argparse.BooleanOptionalAction, default=True,
                    help="also time OFA's step on NHWC input (not how OFA trains; shows where our gain comes from)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space = create_space("ofa_mbv3")
    rng = np.random.default_rng(0)
    randoms = [[MBv3Arch(**{**space.sample(rng).to_dict(), "r": RES}) for _ in range(2)]
               for _ in range(args.repeats + args.warmup)]
    fns = {"ours": ours(space, randoms, args.threads), "ofa": ofa_step(space, randoms)}
    if args.ofa_channels_last:
        fns["ofa (NHWC input)"] = ofa_step(space, randoms, channels_last=True)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(args.warmup + args.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    img_s = {k: BATCH / statistics.median(v) for k, v in times.items()}
    print(f"sandwich step (max + 2 random + min), batch {BATCH}, resolution {RES}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved steps")
    print(f"{'implementation':<20}{'median step s':>14}{'images/s':>10}")
    for k, v in times.items():
        print(f"{k:<20}{statistics.median(v):>14.3f}{img_s[k]:>10.2f}")
    ratio = img_s["ours"] / img_s["ofa"]
    print(f"RESULT ours_img_s={img_s['ours']:.2f} ofa_img_s={img_s['ofa']:.2f} ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
