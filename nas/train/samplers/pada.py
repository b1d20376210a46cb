"""PA&DA sampler (registry name ``pada``): importance sampling of paths and data for ranking-consistent training.

Lu et al., "PA&DA: Jointly Sampling PAth and DAta for Consistent NAS", CVPR 2023 (code ShunLu91/PA-DA). The
importance bookkeeping and its exact rules are the two classes below, the gradient credit per gene is
:mod:`nas.train.grad_attribution`. Life cycle in the trainer:

* ``plan``: one single-path architecture per step, drawn from the path distributions;
* ``observe`` (after the task's backward): path importance from the gradients now in the model (measured before
  the trainer's clipping, unlike the original, so importance is not distorted by the clip) and per-example data
  importance from the task's logits and example indices;
* ``on_epoch_end``: new path distributions, and the next epoch's example indices drawn with replacement;
* ``epoch_data``: those indices, with loss weights ``1/(N p_i)`` when ``unbiased=True`` (the trainer's weighted mean
  normalises them per batch, i.e. self-normalised importance sampling), or a seeded permutation in epoch 0;
* ``state_dict``: RNG, path and data importance and the pending next-epoch draw, as plain values.

Importance state (free of any trainer):

Follows PA&DA (Lu et al., "PA&DA: Jointly Sampling PAth and DAta for Consistent NAS", CVPR 2023; code
ShunLu91/PA-DA). The variance-minimising sampling probability of an item is proportional to its gradient norm, so:

* **Paths** (:class:`PathImportance`): after each backward, every gene's chosen value is credited with the gradient
  norm of the parameters it used (sum of per-tensor L2 norms over every place, e.g. every cell, where it ran).
  Genes with identical choice tuples are tied into one distribution (``tie="choices"``; on NAS-Bench-201 this is the
  original's single distribution shared by the six edges) and a choice's credit is divided by how many of the tied
  genes chose it. Credits are smoothed per step, ``g <- s*g + (1-s)*new`` (s=0.5 as in the original; the first
  credit of an epoch sets ``g = new`` instead of averaging with zero). Choices not used in a step keep their ``g``.
  At the end of epoch ``e`` (0-based) ``tau = min(tau_max, (e+1)/total_epochs)`` and each distribution becomes
  ``p = tau*g/sum(g) + (1-tau)*uniform``; ``g`` is reset. Deviation: ``tau_max = 1 - K*floor`` guarantees every
  choice probability >= ``floor``, so parameter-free choices (skip, pooling, none: zero gradient in the original)
  are never starved.
* **Data** (:class:`DataImportance`): per example ``d_i = ||softmax(z_i) - onehot(y_i)||_2``, the closed-form
  gradient norm of cross-entropy w.r.t. the logits (no extra backward pass), smoothed the same way over the
  example's occurrences in the epoch (unseen: 0). At the end of the epoch ``p_i = tau*G_i/sum(G) + (1-tau)/N``
  (``tau <= 1 - min_uniform`` so ``p_i >= min_uniform/N``) and the next epoch's N indices are drawn *with
  replacement* from ``p``. ``unbiased=False`` is the original (prioritised sampling, biased estimator);
  ``unbiased=True`` also returns per-draw loss weights ``1/(N p_i)``, whose expectation under ``p`` is exactly 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from nas.data import Batch
from nas.train.grad_attribution import gene_grad_norms
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask, TaskResult
from nas.train.samplers.base import SAMPLERS, EpochData, Sampler, TrainContext
from search_spaces import SearchSpace
from search_spaces.errors import BadInputError

__all__ = ['PathImportance', 'DataImportance', 'logit_grad_norms', 'tau_ramp', 'TIE_MODES', 'PADASampler']


TIE_MODES = ("choices", "none")


def tau_ramp(epoch: int, total_epochs: int, tau_max: float = 1.0) -> float:
    """``min(tau_max, (epoch+1)/total_epochs)``: the importance share used after epoch ``epoch`` (0-based)."""
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
    return float(min(tau_max, (epoch + 1) / total_epochs))


def logit_grad_norms(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-example ``||softmax(z) - onehot(y)||_2`` (gradient norm of CE w.r.t. the logits)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(p)), np.asarray(targets, dtype=np.int64)] -= 1.0
    return np.linalg.norm(p, axis=1)


def _smooth(old: float, new: float, first: bool, smoothing: float) -> float:
    return new if first else smoothing * old + (1.0 - smoothing) * new


class PathImportance:
    """Per-choice importance and sampling distributions over a space's genes (PA&DA path sampling)."""

    def __init__(self, space: SearchSpace, *, total_epochs: int, floor: float = 0.02, smoothing: float = 0.5,
                 tie: str = "choices") -> None:
        if tie not in TIE_MODES:
            raise ValueError(f"tie must be one of {list(TIE_MODES)}, got {tie!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        self.space, self.total_epochs, self.smoothing, self.floor = space, total_epochs, smoothing, floor
        genes = space.genes()
        keys: dict[Any, int] = {}
        self.group_of: list[int] = []
        for i, g in enumerate(genes):
            key = (repr(g.choices),) if tie == "choices" else (i,)
            self.group_of.append(keys.setdefault(key, len(keys)))
        self.sizes = [0] * len(keys)
        for i, gid in enumerate(self.group_of):
            self.sizes[gid] = len(genes[i].choices)
        kmax = max(self.sizes)
        if not 0.0 <= floor * kmax <= 1.0:
            raise ValueError(f"floor must satisfy 0 <= floor * n_choices <= 1 (n_choices={kmax}), got {floor}")
        self.probs = [np.full(k, 1.0 / k) for k in self.sizes]
        self.importance = [np.zeros(k) for k in self.sizes]
        self.seen = [np.zeros(k, dtype=bool) for k in self.sizes]
        self.tau = 0.0

    @property
    def n_groups(self) -> int:
        return len(self.sizes)

    def sample(self, rng: np.random.Generator) -> Any:
        """Draw every gene from its group's distribution; inactive genes are canonicalised by the space."""
        idx = [int(rng.choice(self.sizes[g], p=self.probs[g])) for g in self.group_of]
        return self.space.decode(np.array(idx))

    def observe(self, arch: Any, gene_norms: Mapping[int, float] | Sequence[float]) -> None:
        """Credit each active gene's chosen value with ``gene_norms[gene]`` (tied genes averaged per choice)."""
        enc, mask = self.space.encode(arch), self.space.active(arch)
        total: dict[tuple[int, int], float] = {}
        count: dict[tuple[int, int], int] = {}
        for i, (c, on) in enumerate(zip(enc, mask)):
            if not on:
                continue
            key = (self.group_of[i], int(c))
            total[key] = total.get(key, 0.0) + float(gene_norms[i])
            count[key] = count.get(key, 0) + 1
        for (g, c), s in total.items():
            new = s / count[(g, c)]
            self.importance[g][c] = _smooth(self.importance[g][c], new, not self.seen[g][c], self.smoothing)
            self.seen[g][c] = True

    def end_epoch(self, epoch: int) -> float:
        """Set the next epoch's distributions from the importance; reset it; return the tau used."""
        for g, k in enumerate(self.sizes):
            tau = tau_ramp(epoch, self.total_epochs, 1.0 - k * self.floor)
            imp = self.importance[g]
            share = imp / imp.sum() if imp.sum() > 0 else np.full(k, 1.0 / k)
            p = tau * share + (1.0 - tau) / k
            self.probs[g] = p / p.sum()
            self.importance[g] = np.zeros(k)
            self.seen[g] = np.zeros(k, dtype=bool)
        self.tau = tau_ramp(epoch, self.total_epochs)
        return self.tau

    def state_dict(self) -> dict[str, Any]:
        return {"probs": [p.tolist() for p in self.probs], "importance": [g.tolist() for g in self.importance],
                "seen": [s.tolist() for s in self.seen], "tau": self.tau}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if [len(p) for p in state["probs"]] != self.sizes:
            raise ValueError(f"path state has groups of sizes {[len(p) for p in state['probs']]}, "
                             f"this space needs {self.sizes}")
        self.probs = [np.asarray(p, dtype=np.float64) for p in state["probs"]]
        self.importance = [np.asarray(g, dtype=np.float64) for g in state["importance"]]
        self.seen = [np.asarray(s, dtype=bool) for s in state["seen"]]
        self.tau = float(state["tau"])


class DataImportance:
    """Per-example importance and the next epoch's index draw (PA&DA data sampling)."""

    def __init__(self, n_examples: int, *, total_epochs: int, unbiased: bool = False, smoothing: float = 0.5,
                 min_uniform: float = 0.05) -> None:
        if n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {n_examples}")
        if not 0.0 <= min_uniform <= 1.0:
            raise ValueError(f"min_uniform must be in [0, 1], got {min_uniform}")
        if unbiased and min_uniform <= 0.0:
            raise ValueError("unbiased reweighting 1/(N p_i) needs min_uniform > 0 so that every p_i > 0")
        self.n, self.total_epochs, self.unbiased = n_examples, total_epochs, unbiased
        self.smoothing, self.min_uniform = smoothing, min_uniform
        self.importance = np.zeros(n_examples)
        self.seen = np.zeros(n_examples, dtype=bool)
        self.probs = np.full(n_examples, 1.0 / n_examples)
        self.tau = 0.0

    def observe(self, indices: Sequence[int] | np.ndarray, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Record ``||softmax - onehot||`` of each example in the batch; returns those norms."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.min(initial=0) < 0 or idx.max(initial=0) >= self.n:
            raise IndexError(f"example indices must lie in [0, {self.n - 1}], got [{idx.min()}, {idx.max()}]")
        d = logit_grad_norms(logits, targets)
        for i, v in zip(idx.tolist(), d.tolist()):
            self.importance[i] = _smooth(self.importance[i], v, not self.seen[i], self.smoothing)
            self.seen[i] = True
        return d

    def end_epoch(self, epoch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """Draw the next epoch's N indices with replacement; weights ``1/(N p_i)`` when unbiased, else None."""
        tau = tau_ramp(epoch, self.total_epochs, 1.0 - self.min_uniform)
        total = self.importance.sum()
        share = self.importance / total if total > 0 else np.full(self.n, 1.0 / self.n)
        p = tau * share + (1.0 - tau) / self.n
        self.probs = p / p.sum()
        self.tau = tau
        self.importance = np.zeros(self.n)
        self.seen = np.zeros(self.n, dtype=bool)
        idx = rng.choice(self.n, size=self.n, replace=True, p=self.probs)
        return idx, (self.weights(idx) if self.unbiased else None)

    def weights(self, indices: np.ndarray) -> np.ndarray:
        """Importance weights ``1/(N p_i)`` of drawn examples under the current distribution."""
        return 1.0 / (self.n * self.probs[np.asarray(indices, dtype=np.int64)])

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance.tolist(), "seen": self.seen.tolist(), "probs": self.probs.tolist(),
                "tau": self.tau}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["probs"]) != self.n:
            raise ValueError(f"data state holds {len(state['probs'])} examples, this dataset has {self.n}")
        self.importance = np.asarray(state["importance"], dtype=np.float64)
        self.seen = np.asarray(state["seen"], dtype=bool)
        self.probs = np.asarray(state["probs"], dtype=np.float64)
        self.tau = float(state["tau"])


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
            raise BadInputError("unbiased PA&DA needs min_uniform > 0 so every example keeps p_i > 0")
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
