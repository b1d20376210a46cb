"""EQ-Net's training recipe (Xu et al., ICCV 2023) as a sampler: the bit sandwich with group progressive guidance
and the weight-distribution regulariser.

Each step trains, on the same batch, the highest-bit subnet on labels, ``n_random`` random subnets and the
lowest-bit subnet; each later one distils from the one before it (a *chain*: random from highest, lowest from the
last random), ``loss = lam * KL(teacher || student) + (1 - lam) * CE``, ``lam = 0.5``; teacher logits are detached
(the trainer's in-place teacher is replaced by every task marked ``teacher``). After the subnets' backward passes
:func:`~supernets.quant.wdr.wdr_loss` is back-propagated (skewness to 0, kurtosis to 1.8), then the trainer takes
one optimizer step.

Granularity and symmetry of every subnet, including the highest and lowest, are drawn through the joint space's
own mode genes, i.e. exactly as a searcher or evaluation samples them (global or per layer, as the space says).
With a free architecture the highest-bit subnet also uses the largest architecture and the lowest-bit subnet the
smallest (BigNAS sandwich). The random subnets are uniform over the genes (``random_draw="uniform"``, as EQ-Net
trains) or drawn the CQAP way (``"cqap"``: a target average bit-width uniformly, then per-layer bits from the
probability map of :mod:`search_spaces.quant_cqap`, which covers low and high average bits evenly).
On a fresh run the quantisers are initialised from the first batch (L_p clipping
search over ``calib_steps`` ranges, ``calib_images`` images) unless they already are.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nas.data import Batch
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask
from nas.train.samplers.base import SAMPLERS, Sampler
from search_spaces.errors import BadInputError
from search_spaces.quant import JointArch, JointSpace
from search_spaces.quant_cqap import build_bit_map
from supernets.quant import QuantSupernet, calibrate, quant_layers
from supernets.quant.wdr import wdr_loss

__all__ = ["EQNetSampler"]


class EQNetSampler(Sampler):
    """Bit sandwich (highest, ``n_random`` random, lowest) with chained distillation and WDR."""

    tags = ("high", "random", "low")

    def __init__(self, space: JointSpace, *, lam: float = 0.5, n_random: int = 1, label_smoothing: float = 0.0,
                 temperature: float = 1.0, skew_weight: float = 1.0, kurt_weight: float = 0.015,
                 target_kurtosis: float = 1.8, calib_images: int = 256, calib_steps: int = 80,
                 random_draw: str = "uniform", seed: int = 0) -> None:
        if not isinstance(space, JointSpace):
            raise TypeError(f"the eqnet sampler needs a joint (arch x quantisation policy) space, "
                            f"got {type(space).__name__}; use e.g. search_space=quant_nb201_tiny")
        if not 0.0 <= lam < 1.0:
            raise BadInputError(f"lam must be in [0, 1) (weight of the distillation term), got {lam}")
        if n_random < 0:
            raise BadInputError(f"n_random must be >= 0, got {n_random}")
        if random_draw not in ("uniform", "cqap"):
            raise BadInputError(f"random_draw={random_draw!r}; choose 'uniform' (every gene uniformly) or 'cqap' "
                                "(target average bits uniformly, per-layer bits from EQ-Net's probability map)")
        super().__init__(space, seed=seed)
        self.space: JointSpace = space
        self._draw = build_bit_map(space, seed=seed).draw if random_draw == "cqap" else space.sample
        self.n_random, self.calib_images, self.calib_steps = n_random, calib_images, calib_steps
        self.skew_weight, self.kurt_weight, self.target_kurtosis = skew_weight, kurt_weight, target_kurtosis
        self.label_recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)
        self.chain_recipe = LossRecipe(hard=1.0 - lam, soft=lam, source="inplace", label_smoothing=label_smoothing,
                                       temperature=temperature)
        self._model: nn.Module | None = None
        self.last_wdr = float("nan")

    def _base(self, largest: bool) -> Any:
        sp = self.space
        if sp.fixed_arch is not None:
            return sp.fixed_arch
        return sp.base.max_arch() if largest else sp.base.min_arch()

    def highest(self) -> JointArch:
        """Largest architecture at the highest bit-widths, modes drawn from the space's mode genes."""
        sp = self.space
        return sp.sample_modes(sp.policy_for(self._base(True), sp.w_bits[-1], sp.a_bits[-1]), self.rng)

    def lowest(self) -> JointArch:
        sp = self.space
        return sp.sample_modes(sp.policy_for(self._base(False), sp.w_bits[0], sp.a_bits[0]), self.rng)

    def setup(self, model: nn.Module) -> None:
        """Fresh run: calibrate at the first step unless some quantiser was already initialised."""
        if isinstance(model, QuantSupernet) and not any(bool(q.aq.initialized) for q in quant_layers(model)):
            self._model = model

    def plan(self, step: int, batch: Batch) -> StepPlan:
        if self._model is not None:
            calibrate(self._model, batch.x[: self.calib_images], seed=self.seed,  # type: ignore[arg-type]
                      steps=self.calib_steps)
            self._model = None
        tasks = [SubnetTask(self.highest(), self.label_recipe, teacher=True, tag="high")]
        tasks += [SubnetTask(self._draw(self.rng), self.chain_recipe, teacher=True, tag="random")
                  for _ in range(self.n_random)]
        tasks.append(SubnetTask(self.lowest(), self.chain_recipe, tag="low"))
        return StepPlan(tasks)

    def on_step_end(self, step: int, model: nn.Module) -> None:
        loss = wdr_loss(model, skew_weight=self.skew_weight, kurt_weight=self.kurt_weight,
                        target_kurtosis=self.target_kurtosis)
        loss.backward()
        self.last_wdr = float(loss.detach())


@SAMPLERS.register("eqnet")
def eqnet(**kwargs: Any) -> EQNetSampler:
    """EQ-Net: bit sandwich with chained distillation (GPG) and the WDR regulariser."""
    return EQNetSampler(**kwargs)
