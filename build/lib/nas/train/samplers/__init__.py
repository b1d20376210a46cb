"""Samplers (registry ``SAMPLERS``): ``uniform``, ``sandwich`` (BigNAS) and ``progressive`` (OFA phases)."""

from __future__ import annotations

from nas.train.samplers.base import SAMPLERS, EpochData, Phase, PhasedSampler, Sampler, TrainContext, create_sampler
from nas.train.samplers.basic import SandwichSampler, UniformSampler
from nas.train.samplers.progressive import OFA_PHASES, ProgressiveShrinking

__all__ = [
    "SAMPLERS", "EpochData", "Phase", "PhasedSampler", "Sampler", "TrainContext", "create_sampler",
    "SandwichSampler", "UniformSampler", "OFA_PHASES", "ProgressiveShrinking",
]

# PA&DA and ShiftNAS live beside the trainer; importing them registers "pada" and "shiftnas".
from nas.train import samplers_eqnet as _eqnet  # noqa: E402,F401  (registers "eqnet")
from nas.train import samplers_pada as _pada  # noqa: E402,F401
from nas.train import samplers_shiftnas as _shiftnas  # noqa: E402,F401
from nas.train import samplers_sorted as _sorted  # noqa: E402,F401  (registers "sortednet" and "fixed")
