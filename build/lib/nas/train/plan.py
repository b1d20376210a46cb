"""The step plan: what one training step trains (DESIGN.md "Step plan").

A sampler turns its state (and optionally the batch) into a :class:`StepPlan`, an ordered list of
:class:`SubnetTask` = (architecture, loss recipe, weight, flags). The trainer runs the tasks in order on the same
batch, accumulates their gradients and takes one optimizer step. Progressive shrinking (OFA), the sandwich rule
(BigNAS) and later samplers differ only in the plans they emit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nas.train.losses import LossRecipe

__all__ = ["SubnetTask", "StepPlan", "TaskResult"]


@dataclass(frozen=True)
class SubnetTask:
    """One subnet of a step.

    ``teacher=True`` makes this task's detached logits the in-place soft targets of later tasks (BigNAS);
    ``regularize=True`` turns dropout on for this forward only (BigNAS regularises only the largest child).
    ``tag`` names the task in metrics (e.g. ``max``, ``min``, ``random``).
    """

    arch: Any
    recipe: LossRecipe
    weight: float = 1.0
    teacher: bool = False
    regularize: bool = False
    tag: str = "subnet"


@dataclass
class StepPlan:
    """Ordered tasks of one optimizer step."""

    tasks: list[SubnetTask] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("a step plan needs at least one subnet task")
        seen_teacher = False
        for i, t in enumerate(self.tasks):
            if t.recipe.needs_inplace_teacher and not seen_teacher:
                raise ValueError(f"task {i} ({t.tag}) distils from the in-place teacher, but no earlier task "
                                 f"has teacher=True")
            seen_teacher |= t.teacher

    def __iter__(self) -> Iterator[SubnetTask]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def archs(self) -> list[Any]:
        return [t.arch for t in self.tasks]

    @classmethod
    def of(cls, tasks: Sequence[SubnetTask]) -> StepPlan:
        return cls(list(tasks))


@dataclass
class TaskResult:
    """What a sampler may observe after a task's backward pass (``observe`` hook).

    ``per_example`` is the unweighted per-example loss; ``logits`` are detached; ``index`` holds the examples'
    indices in the training split (for per-example importance as in PA&DA).
    """

    task: SubnetTask
    loss: float
    per_example: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    index: torch.Tensor
