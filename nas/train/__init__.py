"""Supernet training: step plans, samplers, loss recipes, the trainer and the phase driver.

Checkpoints and weight files are :mod:`nas.checkpoints`."""

from __future__ import annotations

from nas.train.choices import ChoiceError, Choices
from nas.train.losses import LossRecipe, distillation
from nas.train.plan import StepPlan, SubnetTask, TaskResult
from nas.train.samplers import (
    SAMPLERS,
    EpochData,
    Phase,
    PhasedSampler,
    ProgressiveShrinking,
    Sampler,
    SandwichSampler,
    UniformSampler,
    create_sampler,
)
from nas.train.trainer import TrainConfig, Trainer, TrainResult

__all__ = [
    "ChoiceError", "Choices", "LossRecipe",
    "distillation", "StepPlan", "SubnetTask", "TaskResult", "SAMPLERS", "EpochData", "Phase", "PhasedSampler",
    "ProgressiveShrinking", "Sampler", "SandwichSampler", "UniformSampler", "create_sampler", "TrainConfig",
    "Trainer", "TrainResult",
]
