"""Shared pieces of the SortedNet and Mixture-of-Supernets benchmarks: step-budgeted training runs through the
project trainer, and top-1 of many subnets on the Fashion-MNIST test set with inherited weights."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nas.data import DataModule
from nas.train import Sampler, TrainConfig, Trainer
from supernets import Supernet


def step_config(steps: int, data: DataModule, *, batch_size: int, lr: float, optimizer: str, weight_decay: float,
                warmup_epochs: float, seed: int, threads: int) -> TrainConfig:
    """A cosine schedule of (about) ``steps`` optimizer steps, spread over whole epochs of the training split."""
    per_epoch = data.split_size("train") // batch_size
    epochs = max(1, math.ceil(steps / per_epoch))
    return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                       warmup_epochs=warmup_epochs, max_steps_per_epoch=math.ceil(steps / epochs), seed=seed,
                       device="cpu", threads=threads, eval_every=0, progress=False, tensorboard=False, grad_clip=5.0)


def train(net: Supernet, data: DataModule, sampler: Sampler, cfg: TrainConfig, out_dir: Path) -> float:
    """Train from scratch (any earlier run in ``out_dir`` is replaced); returns seconds."""
    t = time.perf_counter()
    res = Trainer(net, data, sampler, cfg, out_dir).fit(resume=False)
    print(f"  trained {type(sampler).__name__} for {res.steps} steps in {time.perf_counter() - t:.0f}s", flush=True)
    return time.perf_counter() - t


def test_top1(net: Supernet, data: DataModule, archs: Sequence[Any], *, n_images: int | None = None,
              seed: int = 0) -> list[float]:
    """Top-1 (%) on the test split (BN recalibrated only when the supernet has batch norm)."""
    from nas.evaluate import EvalSet, evaluate_subnets  # after nas.train: importing nas.evaluate first is circular

    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    evalset = EvalSet(data, split="test", n_images=n_images, calib_images=500, calib_batch=250, seed=seed)
    return [r["top1"] for r in evaluate_subnets(net, archs, evalset, recalibrate=has_bn)]
