"""PA&DA sampler (registry name ``pada``): importance sampling of paths and data for ranking-consistent training.

Lu et al., "PA&DA: Jointly Sampling PAth and DAta for Consistent NAS", CVPR 2023 (code ShunLu91/PA-DA). The
importance bookkeeping and its exact rules live in :mod:`nas.train.pada_core`, the gradient credit per gene in
:mod:`nas.train.grad_attribution`. Life cycle in the trainer:

* ``plan``: one single-path architecture per step, drawn from the path distributions;
* ``observe`` (after the task's backward): path importance from the gradients now in the model (measured before
  the trainer's clipping, unlike the original, so importance is not distorted by the clip) and per-example data
  importance from the task's logits and example indices;
* ``on_epoch_end``: new path distributions, and the next epoch's example indices drawn with replacement;
* ``epoch_data``: those indices, with loss weights ``1/(N p_i)`` when ``unbiased=True`` (the trainer's weighted mean
  normalises them per batch, i.e. self-normalised importance sampling), or a seeded permutation in epoch 0;
* ``state_dict``: RNG, path and data importance and the pending next-epoch draw, as plain values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from nas.data import Batch
from nas.train.grad_attribution import gene_grad_norms
from nas.train.losses import LossRecipe
from nas.train.pada_core import DataImportance, PathImportance
from nas.train.plan import StepPlan, SubnetTask, TaskResult
from nas.train.samplers.base import SAMPLERS, EpochData, Sampler, TrainContext
from search_spaces import SearchSpace

__all__ = ["PADASampler"]


class PADASampler(Sampler):
    """Path importance always; data importance when ``data=True`` (the dataset size is learnt from the trainer)."""

    tags = ("subnet",)

    def __init__(self, space: SearchSpace, *, epochs: int, data: bool = True, unbiased: bool = False,
                 floor: float = 0.02, min_uniform: float = 0.05, smoothing: float = 0.5, tie: str = "choices",
                 label_smoothing: float = 0.0, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        self.epochs = epochs
        self.path = PathImportance(space, total_epochs=epochs, floor=floor, smoothing=smoothing, tie=tie)
        self.use_data, self.unbiased, self.min_uniform, self.smoothing = data, unbiased, min_uniform, smoothing
        if unbiased and min_uniform <= 0:
            raise ValueError("unbiased PA&DA needs min_uniform > 0 so every example keeps p_i > 0")
        self.data: DataImportance | None = None
        self.recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)
        self._next: EpochData | None = None
        self._next_epoch = -1

    def _data_for(self, n_examples: int) -> DataImportance:
        if self.data is None or self.data.n != n_examples:
            self.data = DataImportance(n_examples, total_epochs=self.epochs, unbiased=self.unbiased,
                                       smoothing=self.smoothing, min_uniform=self.min_uniform)
        return self.data

    def plan(self, step: int, batch: Batch) -> StepPlan:
        return StepPlan([SubnetTask(self.path.sample(self.rng), self.recipe, tag="subnet")])

    def observe(self, result: TaskResult, model: nn.Module) -> None:
        arch = result.task.arch
        self.path.observe(arch, gene_grad_norms(model, arch))
        if self.use_data and self.data is not None:
            self.data.observe(result.index.cpu().numpy(), result.logits.float().cpu().numpy(),
                              result.targets.cpu().numpy())

    def on_epoch_end(self, epoch: int, context: TrainContext) -> None:
        self.path.end_epoch(epoch)
        if self.use_data and self.data is not None:
            idx, w = self.data.end_epoch(epoch, self.rng)
            self._next, self._next_epoch = EpochData(idx, w), epoch + 1

    def epoch_data(self, epoch: int, n_examples: int, seed: int) -> EpochData:
        if self.use_data:
            self._data_for(n_examples)
        if self._next is not None and epoch == self._next_epoch and len(self._next.indices) == n_examples:
            return self._next
        return super().epoch_data(epoch, n_examples, seed)

    def state_dict(self) -> dict[str, Any]:
        nxt = self._next
        return {**super().state_dict(), "path": self.path.state_dict(),
                "data": None if self.data is None else {"n": self.data.n, **self.data.state_dict()},
                "next": None if nxt is None else {"indices": nxt.indices.tolist(),
                                                  "weights": None if nxt.weights is None else nxt.weights.tolist()},
                "next_epoch": self._next_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.path.load_state_dict(state["path"])
        if state["data"] is not None:
            self._data_for(int(state["data"]["n"])).load_state_dict(state["data"])
        nxt = state["next"]
        self._next = None if nxt is None else EpochData(np.asarray(nxt["indices"]), None if nxt["weights"] is None
                                                        else np.asarray(nxt["weights"]))
        self._next_epoch = int(state["next_epoch"])


@SAMPLERS.register("pada")
def pada(**kwargs: Any) -> PADASampler:
    """PA&DA path + data importance sampling (single path per step)."""
    return PADASampler(**kwargs)
