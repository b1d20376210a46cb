"""Optimizer and learning-rate schedules from timm, updated per step so resumed runs reproduce the same lrs.

- ``cosine``: timm's ``CosineLRScheduler`` with linear warm-up (OFA, AttentiveNAS).
- ``exp_const``: BigNAS's exponential decay with a constant ending, lr = base * max(gamma^t, end_ratio), as a
  timm ``Scheduler`` subclass. BigNAS decays by 0.97 every 2.4 epochs of 360 and holds at 5% of the initial lr,
  i.e. reaches the floor at about 66% of training; ``end_at`` gives that fraction so short runs keep the shape.
The optimizer is timm's ``create_optimizer_v2`` (no weight decay on BN and biases, as OFA's ``no_decay_keys``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn

from nas.registry import Registry

__all__ = ["ExpConstLRScheduler", "SCHEDULES", "create_schedule", "make_optimizer"]


def make_optimizer(model: nn.Module, *, name: str = "sgd", lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """timm optimizer (``sgd`` is SGD with Nesterov momentum); BN and bias parameters get no weight decay."""
    return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=weight_decay, momentum=momentum,
                               filter_bias_and_bn=True)


class ExpConstLRScheduler(Scheduler):
    """Linear warm-up, then lr = base * max(gamma^(t - warmup), end_ratio); gamma reaches the floor at ``t_end``."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, t_end: int, end_ratio: float = 0.05, warmup_t: int = 0,
                 warmup_lr_init: float = 0.0, t_in_epochs: bool = False) -> None:
        if not 0 < end_ratio <= 1:
            raise ValueError(f"end_ratio must be in (0, 1], got {end_ratio}")
        if t_end < 1:
            raise ValueError(f"t_end must be >= 1, got {t_end}")
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=t_in_epochs)
        self.gamma = math.exp(math.log(end_ratio) / t_end)
        self.end_ratio, self.warmup_t, self.warmup_lr_init = end_ratio, warmup_t, warmup_lr_init
        if warmup_t:
            self.update_groups([warmup_lr_init] * len(self.base_values))

    def _get_lr(self, t: int) -> list[float]:
        if t < self.warmup_t:
            return [self.warmup_lr_init + (v - self.warmup_lr_init) * t / self.warmup_t for v in self.base_values]
        factor = max(self.gamma ** (t - self.warmup_t), self.end_ratio)
        return [v * factor for v in self.base_values]


def _cosine(opt: torch.optim.Optimizer, *, total: int, warmup: int, warmup_lr: float, min_lr: float,
            **_: Any) -> Scheduler:
    return CosineLRScheduler(opt, t_initial=max(total - warmup, 1), lr_min=min_lr, warmup_t=warmup,
                             warmup_lr_init=warmup_lr, warmup_prefix=True, t_in_epochs=False)


def _exp_const(opt: torch.optim.Optimizer, *, total: int, warmup: int, warmup_lr: float, end_ratio: float = 0.05,
               end_at: float = 0.66, **_: Any) -> Scheduler:
    if not 0 < end_at <= 1:
        raise ValueError(f"end_at must be in (0, 1], got {end_at}")
    t_end = max(int(round(end_at * total)) - warmup, 1)
    return ExpConstLRScheduler(opt, t_end=t_end, end_ratio=end_ratio, warmup_t=warmup, warmup_lr_init=warmup_lr)


SCHEDULES: Registry[Scheduler] = Registry("lr schedule")
SCHEDULES.add("cosine", _cosine)
SCHEDULES.add("exp_const", _exp_const)


def create_schedule(name: str, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int = 0,
                    warmup_lr: float = 0.0, min_lr: float = 0.0, end_ratio: float = 0.05,
                    end_at: float = 0.66) -> Scheduler:
    """A per-step timm scheduler over ``total_steps`` optimizer steps (call ``step_update(step)``)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return SCHEDULES.get(name)(optimizer, total=total_steps, warmup=warmup_steps, warmup_lr=warmup_lr,
                               min_lr=min_lr, end_ratio=end_ratio, end_at=end_at)
