"""The sampler extension point: decides which subnets (and which data) each training step uses.

A :class:`Sampler` emits a :class:`~nas.train.plan.StepPlan` per step from its own explicit RNG and state, which
it can save and restore (checkpoints). Hooks let later samplers adapt without touching the trainer:

- ``setup(model)``: once, on a fresh run (e.g. BigNAS's zero-initialised residual BN gammas);
- ``observe(result, model)``: after each task's backward (per-example losses and logits, the gradients now
  accumulated in ``model``), e.g. PA&DA's per-choice gradient statistics;
- ``on_step_end(step, model)``: after all tasks of a step, before the optimizer step;
- ``on_epoch_end(epoch, context)``: with access to evaluation of subnets (ShiftNAS's periodic validation);
- ``epoch_data(epoch, n, seed)``: the example order of the next epoch and optional per-example loss weights
  (PA&DA's importance-sampled batches). Default: a seeded permutation, unweighted.

A :class:`PhasedSampler` trains in consecutive phases (progressive shrinking): the phase driver builds one plain
sampler per phase, with that phase's epochs and learning rate, and gives it the model at the phase start.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from torch import nn

from nas.data import Batch
from nas.registry import Registry
from nas.train.plan import StepPlan, TaskResult
from search_spaces import SearchSpace

__all__ = ["Sampler", "PhasedSampler", "Phase", "EpochData", "TrainContext", "SAMPLERS", "create_sampler"]


@dataclass
class EpochData:
    """Example indices of one epoch, in order (repeats allowed), and optional per-example loss weights."""

    indices: np.ndarray
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        if self.weights is not None:
            self.weights = np.asarray(self.weights, dtype=np.float32)
            if self.weights.shape != self.indices.shape:
                raise ValueError(f"weights shape {self.weights.shape} != indices shape {self.indices.shape}")


class TrainContext(Protocol):
    """What ``on_epoch_end`` can use: the model, the data and BN-recalibrated evaluation of subnets."""

    model: nn.Module

    def evaluate(self, archs: Sequence[Any], split: str = "val") -> list[dict[str, Any]]: ...


class Sampler(abc.ABC):
    """Base class of all samplers; subclasses implement :meth:`plan` and may extend the state and hooks."""

    tags: tuple[str, ...] = ("subnet",)

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @abc.abstractmethod
    def plan(self, step: int, batch: Batch) -> StepPlan:
        """The subnets, loss recipes and weights of global step ``step`` on ``batch``."""

    @property
    def needs_fixed_teacher(self) -> bool:
        """Whether some plan distils from an external, fixed teacher network."""
        return False

    def setup(self, model: nn.Module) -> None:  # noqa: B027 (optional hook)
        """Called once before the first step of a fresh (not resumed) run."""

    def observe(self, result: TaskResult, model: nn.Module) -> None:  # noqa: B027 (optional hook)
        """Called after each task's backward pass."""

    def on_step_end(self, step: int, model: nn.Module) -> None:  # noqa: B027 (optional hook)
        """Called after all tasks of a step, before the optimizer step."""

    def on_epoch_end(self, epoch: int, context: TrainContext) -> None:  # noqa: B027 (optional hook)
        """Called after each epoch (before its checkpoint)."""

    def epoch_data(self, epoch: int, n_examples: int, seed: int) -> EpochData:
        """Order of the training examples for ``epoch``; default: a permutation seeded by (seed, epoch)."""
        return EpochData(np.random.default_rng([seed, epoch]).permutation(n_examples))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


@dataclass(frozen=True)
class Phase:
    """One phase of a phased recipe: its sampler, epochs and learning-rate settings (``None``: trainer default)."""

    name: str
    sampler: Sampler
    epochs: int
    lr: float | None = None
    warmup_epochs: int | None = None


class PhasedSampler(abc.ABC):
    """A recipe trained in consecutive phases, each starting from the previous phase's final weights."""

    @abc.abstractmethod
    def phases(self) -> list[Phase]:
        """All phases, in order."""

    def start_phase(self, index: int, model: nn.Module) -> None:  # noqa: B027 (optional hook)
        """Called when phase ``index`` starts fresh, after the previous weights are loaded (not on resume)."""

    @property
    def needs_fixed_teacher(self) -> bool:
        return any(p.sampler.needs_fixed_teacher for p in self.phases())


SAMPLERS: Registry[Sampler | PhasedSampler] = Registry("sampler")


def create_sampler(name: str, space: SearchSpace, **kwargs: Any) -> Sampler | PhasedSampler:
    """Create a registered sampler for ``space`` (``create_sampler("sandwich", space, n_random=2)``)."""
    return SAMPLERS.create(name, space=space, **kwargs)
