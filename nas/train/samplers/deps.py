"""DεpS: delayed ε-shrinking (ECCV 2024; notes in ``shared/methods/seed_methods.md`` section 6).

The full network trains alone for the first ``warmup`` fraction of the run (the paper: 150 of 270 epochs). Then
smaller subnets join a sandwich step (full network + ``n_random`` random + smallest, in-place distillation from the
full network), each student's gradient scaled by ``beta(t)``, which ramps linearly from 0 to ``multiplier`` over
the next ``ramp`` fraction of the run and stays there (the paper: 5 epochs). Middle channels are re-sorted by
importance once, on the first shrinking step (OFA's "reorganize weights"), when the supernet can sort.

Students are aggregated per element: ``aggregate="sum"`` adds their gradients (the reference default);
``aggregate="mean"`` divides each element's student gradient sum by the number of students that used that element,
so a weight shared by k subnets receives their mean. A student "uses" an element when its backward pass gave that
element a non-zero gradient; that is the element mask of its slice of the shared tensors (OFA-style prefix channels,
centre-cropped kernels, NB201 ops), with an exact-zero gradient of a used element counted as unused (it adds nothing
to the sum, but the element's mean is then taken over one student fewer). ``mean`` edits gradients between
backward passes, so it runs in a single process only.

``extremes="cost"`` takes the full network and the smallest student as the enabled archs of largest and smallest
MACs (for spaces whose last choices are not the largest, e.g. NB201). The schedule is a function of the step's
position in the run, bound by the trainer (:meth:`DepsSampler.bind`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from nas.data import Batch
from nas.train.choices import Choices
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask, TaskResult
from nas.train.samplers.base import SAMPLERS, Sampler
from search_spaces import SearchSpace
from search_spaces.errors import MissingCapabilityError

__all__ = ["DepsSchedule", "MaskedGradAggregator", "DepsSampler", "AGGREGATES"]

AGGREGATES = ("sum", "mean")


@dataclass(frozen=True)
class DepsSchedule:
    """beta(t) for the run fraction t in [0, 1): None while the full network trains alone, then 0 -> multiplier."""

    warmup: float = 0.54
    ramp: float = 0.02
    multiplier: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be a run fraction in [0, 1), got {self.warmup}")
        if self.ramp < 0 or self.warmup + self.ramp > 1.0:
            raise ValueError(f"ramp must be >= 0 with warmup + ramp <= 1, got warmup={self.warmup}, ramp={self.ramp}")
        if self.multiplier <= 0:
            raise ValueError(f"multiplier must be > 0, got {self.multiplier}")

    def shrinking(self, t: float) -> bool:
        return t >= self.warmup

    def beta(self, t: float) -> float:
        """Student gradient factor at run fraction ``t`` (0 before shrinking starts)."""
        if t < self.warmup:
            return 0.0
        if self.ramp == 0 or t >= self.warmup + self.ramp:
            return self.multiplier
        return self.multiplier * (t - self.warmup) / self.ramp


class MaskedGradAggregator:
    """Per-element aggregation of the students' gradients of one step (``aggregate="mean"``).

    Call :meth:`start` after the teacher's backward, :meth:`add` after each student's backward (the model's
    gradients then hold teacher + students so far) and :meth:`finish` before the optimizer step: it writes
    ``teacher + beta * sum_s g_s / n_users`` into every gradient, ``n_users`` being the number of students that
    touched the element (1 where none did).
    """

    def __init__(self) -> None:
        self._base: dict[str, torch.Tensor] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._sum: dict[str, torch.Tensor] = {}
        self._count: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def start(self, model: nn.Module) -> None:
        self._base = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        self._prev = {n: g.clone() for n, g in self._base.items()}
        self._sum, self._count = {}, {}

    @torch.no_grad()
    def add(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if p.grad is None:
                continue
            g = p.grad.detach()
            delta = g - self._prev[n] if n in self._prev else g.clone()
            self._sum[n] = self._sum[n] + delta if n in self._sum else delta
            used = (delta != 0).to(torch.int32)
            self._count[n] = self._count[n] + used if n in self._count else used
            self._prev[n] = g.clone()

    @torch.no_grad()
    def finish(self, model: nn.Module, beta: float) -> None:
        for n, p in model.named_parameters():
            if n not in self._sum:
                continue
            student = self._sum[n] / self._count[n].clamp_min(1).to(self._sum[n].dtype)
            base = self._base.get(n)
            assert p.grad is not None  # n is in _sum only when a student gave it a gradient
            p.grad.copy_(student * beta if base is None else base + student * beta)
        self._base, self._prev, self._sum, self._count = {}, {}, {}, {}


def _extreme_by_cost(choices: Choices, *, largest: bool, rounds: int = 2) -> Any:
    """The enabled arch of largest (smallest) MACs by coordinate search: NB201's "full model" is all 3x3 convs,
    not the last choice of every edge (average pooling)."""
    space = choices.space
    macs = getattr(space, "macs", None)
    if not callable(macs):
        raise MissingCapabilityError(space, "macs", "deps extremes='cost'")
    x = space.encode(choices.max_arch() if largest else choices.min_arch())
    sign = 1.0 if largest else -1.0
    for _ in range(rounds):
        for i, allowed in enumerate(choices.allowed):
            best = max(allowed, key=lambda c: sign * macs(space.decode(np.r_[x[:i], c, x[i + 1:]])))
            x[i] = best
    return space.decode(x)


class DepsSampler(Sampler):
    """Full network alone, then beta(t)-scaled sandwich students with per-element aggregation and in-place KD."""

    tags = ("max", "random", "min")

    def __init__(self, space: SearchSpace, *, warmup: float = 0.54, ramp: float = 0.02, multiplier: float = 1.0,
                 n_random: int = 2, aggregate: str = "sum", sort_channels: bool = True, extremes: str = "choices",
                 choices: Mapping[str, Any] | None = None, label_smoothing: float = 0.1, kd_ratio: float = 1.0,
                 student_label_weight: float = 0.0, temperature: float = 1.0, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        if n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {n_random}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {list(AGGREGATES)}, got {aggregate!r}")
        if extremes not in ("choices", "cost"):
            raise ValueError(f"extremes must be 'choices' or 'cost', got {extremes!r}")
        self.schedule = DepsSchedule(warmup, ramp, multiplier)
        self.choices = Choices(space, choices, label="deps")
        self.full_arch, self.min_arch = (self.choices.max_arch(), self.choices.min_arch()) if extremes == "choices" \
            else (_extreme_by_cost(self.choices, largest=True), _extreme_by_cost(self.choices, largest=False))
        self.n_random, self.aggregate, self.sort = n_random, aggregate, sort_channels
        self.teacher_recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)
        self.student_recipe = LossRecipe(hard=student_label_weight, soft=kd_ratio, source="inplace",
                                         label_smoothing=label_smoothing, temperature=temperature)
        self.total_steps: int | None = None
        self.model: nn.Module | None = None
        self.sorted_at: int | None = None  # step at which channels were re-sorted
        self._beta = 0.0
        self._agg: MaskedGradAggregator | None = None

    def bind(self, model: nn.Module, *, steps_per_epoch: int, epochs: int, data: Any = None) -> None:
        """The trainer's model and run length (called by :class:`~nas.train.trainer.Trainer`; data unused)."""
        self.model, self.total_steps = model, steps_per_epoch * epochs

    def fraction(self, step: int) -> float:
        if self.total_steps is None:
            raise RuntimeError("DepsSampler needs the run length: call bind(model, steps_per_epoch=, epochs=) first")
        return step / self.total_steps

    def plan(self, step: int, batch: Batch) -> StepPlan:
        t = self.fraction(step)
        full = SubnetTask(self.full_arch, self.teacher_recipe, teacher=True, regularize=True, tag="max")
        if not self.schedule.shrinking(t):
            self._beta, self._agg = 0.0, None
            return StepPlan([full])
        if self.sorted_at is None:
            self._sort_channels(step)
        self._beta = self.schedule.beta(t)
        weight = self._beta if self.aggregate == "sum" else 1.0
        archs = [(self.choices.sample(self.rng), "random") for _ in range(self.n_random)]
        archs.append((self.min_arch, "min"))
        if self.aggregate == "mean":
            if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
                raise RuntimeError("deps aggregate='mean' edits gradients between backward passes and runs in one "
                                   "process only; use aggregate='sum' under torchrun")
            self._agg = MaskedGradAggregator()
        return StepPlan([full, *(SubnetTask(a, self.student_recipe, weight=weight, tag=tag) for a, tag in archs)])

    def _sort_channels(self, step: int) -> None:
        sort = getattr(self.model, "sort_channels", None)
        if self.sort and callable(sort):
            sort(keep_expands=())
        self.sorted_at = step

    def observe(self, result: TaskResult, model: nn.Module) -> None:
        if self._agg is None:
            return
        if result.task.teacher:
            self._agg.start(model)
        else:
            self._agg.add(model)

    def on_step_end(self, step: int, model: nn.Module) -> None:
        if self._agg is not None:
            self._agg.finish(model, self._beta)
            self._agg = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "sorted_at": self.sorted_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.sorted_at = None if state.get("sorted_at") is None else int(state["sorted_at"])


@SAMPLERS.register("deps")
def deps(**kwargs: Any) -> DepsSampler:
    """DεpS: full network first, then beta-ramped students aggregated per element, in-place KD."""
    return DepsSampler(**kwargs)
