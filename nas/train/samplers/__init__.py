"""Samplers (registry ``SAMPLERS``), one module each: ``uniform`` and ``sandwich`` (BigNAS; ``basic``),
``progressive`` (OFA phases), ``deps``, ``supertickets``, ``gmnas``, ``pada``, ``shiftnas`` (with its architecture
generator in ``shiftnas_generator``), ``sortednet``, ``fixed`` and ``eqnet``."""

from __future__ import annotations

from nas.train.samplers.base import SAMPLERS, EpochData, Phase, PhasedSampler, Sampler, TrainContext, create_sampler
from nas.train.samplers.basic import SandwichSampler, UniformSampler
from nas.train.samplers.progressive import OFA_PHASES, ProgressiveShrinking

__all__ = [
    "SAMPLERS", "EpochData", "Phase", "PhasedSampler", "Sampler", "TrainContext", "create_sampler",
    "SandwichSampler", "UniformSampler", "OFA_PHASES", "ProgressiveShrinking",
]

# Importing each module registers its sampler.
from nas.train.samplers import deps as _deps  # noqa: E402,F401
from nas.train.samplers import eqnet as _eqnet  # noqa: E402,F401
from nas.train.samplers import fixed as _fixed  # noqa: E402,F401
from nas.train.samplers import gmnas as _gmnas  # noqa: E402,F401
from nas.train.samplers import pada as _pada  # noqa: E402,F401
from nas.train.samplers import shiftnas as _shiftnas  # noqa: E402,F401
from nas.train.samplers import sortednet as _sortednet  # noqa: E402,F401
from nas.train.samplers import supertickets as _supertickets  # noqa: E402,F401
