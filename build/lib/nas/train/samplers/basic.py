"""Uniform-random and sandwich-rule samplers.

``uniform``: ``n_subnets`` architectures drawn uniformly from the enabled choices each step, trained on labels
(optionally plus distillation from a fixed teacher); this is SPOS-style single-path training and, with OFA's
per-phase choice lists and teacher, one phase of progressive shrinking.

``sandwich`` (BigNAS, Yu et al. ECCV 2020; AttentiveNAS's implementation): the largest child on labels with label
smoothing and dropout, then ``n_random`` random children and the smallest child on the largest child's detached
logits (in-place distillation); the largest child's gamma-zeroed residual blocks start as identities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from nas.data import Batch
from nas.train.choices import Choices
from nas.train.init import zero_init_residual
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask
from nas.train.samplers.base import SAMPLERS, Sampler
from search_spaces import SearchSpace

__all__ = ["UniformSampler", "SandwichSampler"]


class UniformSampler(Sampler):
    """``n_subnets`` uniform draws from ``choices`` per step; loss = CE(ls) + ``kd_ratio`` * KD(fixed teacher)."""

    tags = ("subnet",)

    def __init__(self, space: SearchSpace, *, choices: Mapping[str, Any] | None = None, n_subnets: int = 1,
                 label_smoothing: float = 0.1, kd_ratio: float = 0.0, temperature: float = 1.0, seed: int = 0,
                 label: str = "uniform") -> None:
        super().__init__(space, seed=seed)
        if n_subnets < 1:
            raise ValueError(f"n_subnets must be >= 1, got {n_subnets}")
        self.choices = Choices(space, choices, label=label)
        self.n_subnets = n_subnets
        self.recipe = LossRecipe(hard=1.0, soft=kd_ratio, label_smoothing=label_smoothing, source="fixed",
                                 temperature=temperature)

    @property
    def needs_fixed_teacher(self) -> bool:
        return self.recipe.needs_fixed_teacher

    def plan(self, step: int, batch: Batch) -> StepPlan:
        return StepPlan([SubnetTask(self.choices.sample(self.rng), self.recipe, tag="subnet")
                         for _ in range(self.n_subnets)])


class SandwichSampler(Sampler):
    """Largest + ``n_random`` random + smallest child per step, in-place distillation from the largest."""

    tags = ("max", "random", "min")

    def __init__(self, space: SearchSpace, *, choices: Mapping[str, Any] | None = None, n_random: int = 2,
                 label_smoothing: float = 0.1, kd_ratio: float = 1.0, student_label_weight: float = 0.0,
                 temperature: float = 1.0, zero_init_residual: bool = True, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        if n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {n_random}")
        self.choices = Choices(space, choices, label="sandwich")
        self.n_random, self.zero_init = n_random, zero_init_residual
        self.teacher_recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)
        self.student_recipe = LossRecipe(hard=student_label_weight, soft=kd_ratio, source="inplace",
                                         label_smoothing=label_smoothing, temperature=temperature)

    def setup(self, model: nn.Module) -> None:
        if self.zero_init:
            zero_init_residual(model)

    def plan(self, step: int, batch: Batch) -> StepPlan:
        tasks = [SubnetTask(self.choices.max_arch(), self.teacher_recipe, teacher=True, regularize=True, tag="max")]
        tasks += [SubnetTask(self.choices.sample(self.rng), self.student_recipe, tag="random")
                  for _ in range(self.n_random)]
        tasks.append(SubnetTask(self.choices.min_arch(), self.student_recipe, tag="min"))
        return StepPlan(tasks)


@SAMPLERS.register("uniform")
def uniform(**kwargs: Any) -> UniformSampler:
    """Uniform random subnets from the enabled choices (SPOS; one PS phase)."""
    return UniformSampler(**kwargs)


@SAMPLERS.register("sandwich")
def sandwich(**kwargs: Any) -> SandwichSampler:
    """BigNAS sandwich rule with in-place distillation."""
    return SandwichSampler(**kwargs)
