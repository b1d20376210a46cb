"""GM-NAS: few-shot supernets split by gradient matching (Hu et al., ICLR 2022), sampler name ``gmnas``.

Trains a :class:`~supernets.fewshot.FewShotSupernet` family (``supernet=fewshot``): each step picks a sub-supernet
uniformly and trains one uniform architecture of its choices (SPOS inside each sub-supernet). After each epoch in
``split_epochs`` every sub-supernet is split once (while the family has free members):

1. for each candidate gene ("edge": an NB201 edge's ops; an OFA block's kernel or expand gene, chosen by
   ``split_groups``) with >= 2 choices, and each of its choices ``o``, the gradients of the sub-supernet's weights
   are averaged over ``n_batches`` fixed training batches, each with a random architecture of the sub-supernet
   whose gene is set to ``o`` (the same other genes for every choice: paired comparisons);
2. ``D(o, o') = sum over layers of (1 - mean per-filter cosine)`` of the two gradients, over weight tensors with
   >= 2 dims (BN and other 1-D parameters ignored) and filters where both gradients are non-zero;
3. the choices are partitioned in two by min-cut: the (balanced, as GM-NAS on NB201: 2 vs 3) partition with the
   least within-group distance, i.e. the largest cut; the gene's score is the mean cross-group distance;
4. the gene with the highest score is split: one group stays, the other moves to a new sub-supernet that starts
   from a copy of the weights, or, with ``restart=True`` (GM-NAS's ``--restart``), both sub-supernets of the split
   are re-initialised.

The gradient passes use batch statistics and restore the BN buffers. GM-NAS averages 100 mini-batches; the default
here is small for CPU runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.data import Batch
from nas.train.choices import gene_group
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask
from nas.train.resize import arch_resolution, resize_to
from nas.train.samplers.base import SAMPLERS, Sampler, TrainContext
from search_spaces import SearchSpace
from search_spaces.errors import BadInputError
from supernets.bn import batch_statistics
from supernets.fewshot import FewShotSupernet

__all__ = ["GMNASSampler", "filter_cosine_distance", "min_cut_partition"]


def filter_cosine_distance(ga: dict[str, torch.Tensor], gb: dict[str, torch.Tensor]) -> float:
    """Sum over shared >= 2-D tensors of (1 - mean cosine over filters where both gradients are non-zero)."""
    total = 0.0
    for n, a in ga.items():
        b = gb.get(n)
        if b is None or a.dim() < 2:
            continue
        a2, b2 = a.flatten(1).double(), b.flatten(1).double()
        na, nb = a2.norm(dim=1), b2.norm(dim=1)
        keep = (na > 0) & (nb > 0)
        if bool(keep.any()):
            cos = (a2[keep] * b2[keep]).sum(1) / (na[keep] * nb[keep])
            total += float(1.0 - cos.mean())
    return total


def min_cut_partition(dist: np.ndarray, *, balanced: bool = True) -> tuple[list[int], list[int], float]:
    """(group A, group B, mean cross-group distance) of the 2-way partition with least within-group distance."""
    n = len(dist)
    if n < 2:
        raise ValueError(f"need >= 2 choices to partition, got {n}")
    best: tuple[float, float, list[int], list[int]] | None = None
    for size in range(1, n // 2 + 1):
        if balanced and size != n // 2:
            continue
        for a in combinations(range(n), size):
            b = [i for i in range(n) if i not in a]
            within = sum(dist[i, j] for g in (a, b) for i, j in combinations(g, 2))
            cross = float(np.mean([dist[i, j] for i in a for j in b]))
            if best is None or within < best[0] - 1e-12:
                best = (within, cross, list(a), b)
    assert best is not None
    return best[2], best[3], best[1]


class GMNASSampler(Sampler):
    """Uniform sub-supernet, uniform arch inside it; gradient-matching splits at ``split_epochs``."""

    tags = ("subnet",)

    def __init__(self, space: SearchSpace, *, split_epochs: Sequence[int] = (1,), n_batches: int = 4,
                 batch_size: int = 64, split_groups: Sequence[str] | None = None, balanced: bool = True,
                 restart: bool = False,
                 label_smoothing: float = 0.0, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        if n_batches < 1 or batch_size < 1:
            raise ValueError(f"n_batches and batch_size must be >= 1, got {n_batches}, {batch_size}")
        if any(int(e) < 1 for e in split_epochs):
            raise ValueError(f"split_epochs are epoch counts >= 1, got {list(split_epochs)}")
        groups = {gene_group(g.name) for g in space.genes()}
        unknown = sorted(set(split_groups or ()) - groups)
        if unknown:
            raise BadInputError(f"split_groups {unknown} are not gene groups of {space.name!r}; groups: "
                                f"{sorted(groups)}")
        self.split_epochs, self.n_batches, self.batch_size = sorted({int(e) for e in split_epochs}), n_batches, \
            batch_size
        self.candidates = [i for i, g in enumerate(space.genes())
                           if split_groups is None or gene_group(g.name) in split_groups]
        self.balanced, self.restart = balanced, restart
        self.recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)
        self.model: FewShotSupernet | None = None
        self.data: Any = None
        self.splits: list[dict[str, Any]] = []

    def bind(self, model: nn.Module, *, steps_per_epoch: int, epochs: int, data: Any = None) -> None:
        if not isinstance(model, FewShotSupernet):
            raise BadInputError(f"sampler=gmnas trains a few-shot family: use supernet=fewshot (got "
                                f"{type(model).__name__})")
        self.model, self.data = model, data

    def plan(self, step: int, batch: Batch) -> StepPlan:
        if self.model is None:
            raise RuntimeError("GMNASSampler needs the trainer's few-shot supernet: call bind() first")
        member = int(self.rng.integers(self.model.n_members))
        return StepPlan([SubnetTask(self.model.sample(member, self.rng), self.recipe, tag="subnet")])

    def on_epoch_end(self, epoch: int, context: TrainContext) -> None:
        if epoch + 1 not in self.split_epochs or self.model is None:
            return
        for member in range(self.model.n_members):
            if self.model.n_members >= len(self.model.members):
                break
            self.split_member(member, epoch)

    # -- gradient matching ------------------------------------------------------------------------
    def _batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.data is None:
            raise RuntimeError("GMNASSampler needs training data for its gradient passes (bind(data=...))")
        n = self.data.split_size("train")
        idx = self.rng.choice(n, size=min(n, self.n_batches * self.batch_size), replace=False)
        out = []
        for i in range(0, len(idx), self.batch_size):
            out.append(self.data.get("train", np.sort(idx[i : i + self.batch_size])))
        return out

    def choice_gradients(self, member: int, gene: int, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         ) -> dict[int, dict[str, torch.Tensor]] | None:
        """Mean gradient of ``member``'s weights per choice of ``gene`` (None when the gene is never active)."""
        assert self.model is not None
        choices = self.model.choices_of(member)[gene]
        base = []
        for _ in batches:  # the other genes: one random arch per batch, shared by every choice
            for _try in range(20):
                arch = self.model.sample(member, self.rng)
                if self.space.active(arch)[gene]:
                    break
            else:
                return None
            base.append(self.space.encode(arch))
        net = self.model.member(member)
        device = next(net.parameters()).device
        grads: dict[int, dict[str, torch.Tensor]] = {}
        with batch_statistics(net):
            for c in choices:
                acc: dict[str, torch.Tensor] = {}
                for x_arch, (x, y) in zip(base, batches):
                    enc = x_arch.copy()
                    enc[gene] = c
                    arch = self.space.decode(enc)
                    net.zero_grad(set_to_none=True)
                    with net.use(arch):
                        size = arch_resolution(self.space, arch, self.data.image_size)
                        loss = F.cross_entropy(net(resize_to(x, size, channels_last=False).to(device)), y.to(device))
                        loss.backward()
                    for n, p in net.named_parameters():
                        if p.grad is not None and p.dim() >= 2:
                            acc[n] = acc[n] + p.grad if n in acc else p.grad.detach().clone()
                grads[c] = {n: g / len(batches) for n, g in acc.items()}
        net.zero_grad(set_to_none=True)
        return grads

    def split_member(self, member: int, epoch: int) -> dict[str, Any] | None:
        """Score every candidate gene of ``member`` and split the best one; returns the split record."""
        assert self.model is not None
        batches = self._batches()
        best: dict[str, Any] | None = None
        for gene in self.candidates:
            choices = self.model.choices_of(member)[gene]
            if len(choices) < 2:
                continue
            grads = self.choice_gradients(member, gene, batches)
            if grads is None:
                continue
            dist = np.zeros((len(choices), len(choices)))
            for (i, a), (j, b) in combinations(enumerate(choices), 2):
                dist[i, j] = dist[j, i] = filter_cosine_distance(grads[a], grads[b])
            ga, gb, score = min_cut_partition(dist, balanced=self.balanced)
            if best is None or score > best["score"]:
                best = {"epoch": epoch, "member": member, "gene": self.space.genes()[gene].name, "gene_index": gene,
                        "keep": [choices[i] for i in ga], "moved": [choices[i] for i in gb], "score": score,
                        "dist": dist.tolist()}
        if best is None:
            return None
        best["new_member"] = self.model.split(member, best["gene_index"], best["moved"])
        if self.restart:
            for m in (member, best["new_member"]):
                self.model.reinit(m, int(self.rng.integers(2**31)))
        self.splits.append(best)
        return best

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "splits": list(self.splits)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.splits = [dict(s) for s in state["splits"]]


@SAMPLERS.register("gmnas")
def gmnas(**kwargs: Any) -> GMNASSampler:
    """GM-NAS few-shot training: gradient-matching splits of a supernet=fewshot family."""
    return GMNASSampler(**kwargs)
