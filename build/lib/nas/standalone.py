"""Stand-alone training and evaluation of one static network (the ground truth that supernet rankings are judged by).

A plain supervised loop: SGD with Nesterov momentum, cosine learning-rate decay per step to zero, cross-entropy with
optional label smoothing, optional gradient-norm clipping. It works for any ``nn.Module`` and any loader yielding
``(inputs, targets)`` batches; the seed fixes the parameter initialisation (when ``init=True``) and, through
:func:`torch.manual_seed`, any randomness the loader draws from torch's default generator. NAS-Bench-201
(Dong & Yang, ICLR 2020) trains its cells the same way (SGD-Nesterov, cosine, no warm-up at this scale).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["train_standalone", "evaluate_accuracy", "reset_parameters"]


def reset_parameters(module: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every sub-module that has ``reset_parameters`` from a seeded generator (in place)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return module


def _batches_per_epoch(loader: Iterable) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        name = type(loader).__name__
        raise TypeError(f"train_loader must define len() for the cosine schedule, got {name}") from None


def train_standalone(module: nn.Module, train_loader: Iterable, *, epochs: int, lr: float = 0.1,
                     momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = True,
                     label_smoothing: float = 0.0, grad_clip: float | None = 5.0,
                     device: torch.device | str = "cpu", seed: int = 0, init: bool = True) -> nn.Module:
    """Train ``module`` in place for ``epochs`` passes over ``train_loader`` and return it (in eval mode).

    ``init=True`` re-initialises parameters from ``seed`` first, so the result depends only on the arguments.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    device = torch.device(device)
    steps_per_epoch = _batches_per_epoch(train_loader)
    if steps_per_epoch < 1:
        raise ValueError("train_loader yields no batches")
    torch.manual_seed(seed)
    if init:
        reset_parameters(module, seed)
    module.to(device).train()
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                          nesterov=nesterov and momentum > 0)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    for _ in range(epochs):
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module(x), y)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
            opt.step()
            sched.step()
    return module.eval()


@torch.no_grad()
def evaluate_accuracy(module: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in [0, 1] of ``module`` (put in eval mode; its mode is restored) over ``loader``."""
    device = torch.device(device)
    was_training = module.training
    module.eval()
    correct = seen = 0
    try:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += int((module(x).argmax(1) == y).sum())
            seen += y.numel()
    finally:
        module.train(was_training)
    if seen == 0:
        raise ValueError("evaluation loader yields no examples")
    return correct / seen
