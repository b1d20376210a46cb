"""ShiftNAS sampler (registry name ``shiftnas``): complexity-bin probability shift (Zhang et al., ICCV 2023).

The bins, the conditional sampler, the Gumbel bin draw and the exact logit-update rule (scalar and sign) are in
:mod:`nas.train.shiftnas_core`. Each step trains one architecture drawn inside a bin drawn from the learned bin
distribution. The logits are updated from held-out losses of each bin's probe architectures, either

* every ``every_steps`` steps (``on_step_end``) from held-out batches bound with :meth:`bind_heldout`, using batch
  statistics (cheap; the benchmark uses this), or
* every ``every_epochs`` epochs (``on_epoch_end``) from the trainer's own BN-recalibrated evaluation on its ``val``
  split (``context.evaluate``), when no held-out batches are bound.

Updates start once ``warmup_steps`` steps are done; the first update only records the reference snapshot. The
paper's LSTM architecture generator is not implemented: sampling inside a bin is by bounded rejection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.data import Batch
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask
from nas.train.samplers.base import SAMPLERS, Sampler, TrainContext
from nas.train.shiftnas_core import ComplexityBins, ShiftNASBins, bin_val_losses
from search_spaces import SearchSpace

__all__ = ["ShiftNASSampler"]


class ShiftNASSampler(Sampler):
    tags = ("subnet",)

    def __init__(self, space: SearchSpace, *, n_bins: int = 8, every_steps: int | None = None,
                 every_epochs: int | None = 1, warmup_steps: int = 0, lr: float = 0.5, temperature: float = 1.0,
                 floor: float = 0.02, probes_per_bin: int = 2, max_tries: int = 64, n_probe: int = 2048,
                 cost_fn: Callable[[Any], float] | None = None, label_smoothing: float = 0.0, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        for name, v in (("every_steps", every_steps), ("every_epochs", every_epochs)):
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.every_steps, self.every_epochs, self.warmup_steps = every_steps, every_epochs, warmup_steps
        bins = ComplexityBins(space, n_bins=n_bins, cost_fn=cost_fn, n_probe=n_probe, seed=seed, max_tries=max_tries)
        self.shift = ShiftNASBins(bins, lr=lr, temperature=temperature, floor=floor, probes_per_bin=probes_per_bin,
                                  probe_seed=seed + 1)
        self.recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)
        self.heldout: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.steps_done = 0
        self.last_bin = -1
        self.history: list[list[float]] = []

    @property
    def bins(self) -> ComplexityBins:
        return self.shift.bins

    def probs(self) -> np.ndarray:
        return self.shift.probs()

    def bind_heldout(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fixed held-out (images, labels) batches for step-wise updates (images at the space's resolution)."""
        if not batches:
            raise ValueError("bind_heldout needs at least one (images, labels) batch")
        self.heldout = list(batches)

    def plan(self, step: int, batch: Batch) -> StepPlan:
        arch, self.last_bin = self.shift.sample(self.rng)
        return StepPlan([SubnetTask(arch, self.recipe, tag="subnet")])

    def _apply(self, losses: np.ndarray) -> None:
        self.shift.update(losses)
        self.history.append([float(x) for x in self.probs()])

    def on_step_end(self, step: int, model: nn.Module) -> None:
        self.steps_done += 1
        if not self.every_steps or self.heldout is None or self.steps_done < self.warmup_steps:
            return
        if (self.steps_done - self.warmup_steps) % self.every_steps == 0:
            device = next(model.parameters()).device
            self._apply(bin_val_losses(model, self.shift.probes, self.heldout, device))

    def on_epoch_end(self, epoch: int, context: TrainContext) -> None:
        if self.heldout is not None or not self.every_epochs or (epoch + 1) % self.every_epochs:
            return
        if self.steps_done < self.warmup_steps:
            return
        flat = [a for probes in self.shift.probes for a in probes]
        rows = context.evaluate(flat)
        losses, i = [], 0
        for probes in self.shift.probes:
            losses.append(float(np.mean([rows[i + j]["loss"] for j in range(len(probes))])))
            i += len(probes)
        self._apply(np.asarray(losses))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "shift": self.shift.state_dict(), "steps_done": self.steps_done,
                "last_bin": self.last_bin, "history": self.history, "edges": self.bins.edges.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not np.allclose(state["edges"], self.bins.edges):
            raise ValueError(f"checkpoint bins {state['edges']} differ from this sampler's {self.bins.edges.tolist()}")
        super().load_state_dict(state)
        self.shift.load_state_dict(state["shift"])
        self.steps_done, self.last_bin = int(state["steps_done"]), int(state["last_bin"])
        self.history = [list(h) for h in state["history"]]


@SAMPLERS.register("shiftnas")
def shiftnas(**kwargs: Any) -> ShiftNASSampler:
    """ShiftNAS complexity-bin probability shift with conditional in-bin sampling."""
    return ShiftNASSampler(**kwargs)
