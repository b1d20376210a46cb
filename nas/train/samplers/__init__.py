"""Samplers (registry ``SAMPLERS``): ``uniform``, ``sandwich`` (BigNAS) and ``progressive`` (OFA phases)."""

from __future__ import annotations

from nas.train.samplers.base import SAMPLERS, EpochData, Phase, PhasedSampler, Sampler, TrainContext, create_sampler
from nas.train.samplers.basic import SandwichSampler, UniformSampler
from nas.train.samplers.progressive import OFA_PHASES, ProgressiveShrinking

__all__ = [
    "SAMPLERS", "EpochData", "Phase", "PhasedSampler", "Sampler", "TrainContext", "create_sampler",
    "SandwichSampler", "UniformSampler", "OFA_PHASES", "ProgressiveShrinking",
]
