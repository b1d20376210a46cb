"""A fixed-arch sampler (registry name ``fixed``).

``fixed`` trains one architecture inside the supernet; since only the arch's prefix slices get gradients, this
is the same computation as training the exported subnet alone from the same initial weights (the stand-alone
baseline of the SortedNet and Mixture-of-Supernets benchmarks, run by the same trainer and schedule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.data import Batch
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask
from nas.train.samplers.base import SAMPLERS, Sampler
from search_spaces import SearchSpace

__all__ = ["FixedArchSampler"]


class FixedArchSampler(Sampler):
    """Always the same architecture: stand-alone training of one subnet through the supernet trainer."""

    tags = ("fixed",)

    def __init__(self, space: SearchSpace, *, arch: Any, label_smoothing: float = 0.0, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        if isinstance(arch, Mapping):
            arch = space.from_dict(dict(arch))
        self.arch = space.validate(arch)
        self.recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)

    def plan(self, step: int, batch: Batch) -> StepPlan:
        return StepPlan([SubnetTask(self.arch, self.recipe, tag="fixed")])


@SAMPLERS.register("fixed")
def fixed(**kwargs: Any) -> FixedArchSampler:
    """One fixed architecture (stand-alone baseline inside the supernet trainer)."""
    return FixedArchSampler(**kwargs)
