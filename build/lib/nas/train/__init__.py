"""Supernet training: step plans, samplers, loss recipes, the trainer, checkpoints and the phase driver."""

from __future__ import annotations

from nas.train.checkpoint import CheckpointError, load_supernet, load_weights, save_weights
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
    "CheckpointError", "load_supernet", "load_weights", "save_weights", "ChoiceError", "Choices", "LossRecipe",
    "distillation", "StepPlan", "SubnetTask", "TaskResult", "SAMPLERS", "EpochData", "Phase", "PhasedSampler",
    "ProgressiveShrinking", "Sampler", "SandwichSampler", "UniformSampler", "create_sampler", "TrainConfig",
    "Trainer", "TrainResult",
]
