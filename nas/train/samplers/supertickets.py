"""SuperTickets (Fu et al., ECCV 2022): architecture search and lottery-ticket pruning in one supernet run.

On top of sandwich training (BigNAS rule, in-place KD) this sampler adds, as a function of the run fraction t:

* **network slimming**: an L1 penalty ``rho(t) * |gamma|`` on the BN scales of the expansion channels (the BNs after
  the expand and depthwise convs of every MBConv; ``slim_params`` is a regex on parameter names). It is applied as
  its subgradient ``rho(t) * sign(gamma)`` added to the gradient before the optimizer step, exactly as network
  slimming's ``updateBN``; ``rho`` ramps linearly from 0 over ``slim_warmup`` (paper: 1.8e-4, 25 epochs);
* **progressive global magnitude pruning**: from ``prune_start``, every ``prune_every`` the sparsity of the prunable
  weights (conv/linear tensors matching ``prune_params``, not ``prune_exclude``) rises by ``prune_step`` until
  ``target_sparsity`` (paper: +10 % every 25 epochs up to 90 %). One global magnitude threshold per prune; BN
  statistics are recalibrated on ``recal_images`` training images (largest subnet) after each prune;
* **iterative reactivation**: at every prune after the first, the ``reactivate`` fraction of the previously pruned
  weights with the largest gradient magnitude (an EMA over the steps since the last prune: the loss would move
  them most) come back (at zero) and the same number of the smallest active weights go, so the sparsity is kept
  while the connectivity changes. The paper's text describes reactivation; the public code does not implement it,
  so this gradient-based rule is our reading of it.

Masks live in the sampler state (so in every checkpoint; resume is exact). Pruned weights are zeroed before every
forward and at every epoch end (so the saved supernet weights carry the zeros) and their gradients are masked.
:func:`nas.export_ticket.export_ticket` exports a subnet with its sparsity stored and measured. OFA kernel-transform
matrices are not pruned by default: a transformed smaller kernel mixes the entries of the larger one, so a subnet
with smaller kernels is denser than the mask (the exported metadata measures it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nas.data import Batch, DataModule
from nas.train.plan import StepPlan
from nas.train.resize import arch_resolution, resize_to
from nas.train.samplers.base import SAMPLERS, TrainContext
from nas.train.samplers.basic import SandwichSampler
from search_spaces import SearchSpace
from supernets.bn import recalibrate_bn

__all__ = ["SuperTicketsSampler", "prunable_parameters", "global_magnitude_masks", "mask_sparsity"]


def prunable_parameters(model: nn.Module, include: str = r"weight$", exclude: str | None = None) -> dict[str, Any]:
    """Parameters with >= 2 dims whose name matches ``include`` and not ``exclude``, by name."""
    inc, exc = re.compile(include), re.compile(exclude) if exclude else None
    return {n: p for n, p in model.named_parameters()
            if p.dim() >= 2 and inc.search(n) and not (exc is not None and exc.search(n))}


def global_magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float,
                           forced: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep masks pruning the ``sparsity`` fraction of smallest |w| over all tensors; ``forced`` entries are kept."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    scores = []
    for n, w in weights.items():
        s = w.detach().abs().float().flatten().cpu()
        if forced is not None and n in forced:
            s = torch.where(forced[n].flatten().cpu(), torch.full_like(s, math.inf), s)
        scores.append(s)
    flat = torch.cat(scores)
    n_keep = flat.numel() - int(round(sparsity * flat.numel()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.topk(flat, n_keep, sorted=False).indices] = True  # exactly n_keep kept, ties broken by topk
    masks, i = {}, 0
    for n, w in weights.items():
        masks[n] = keep[i : i + w.numel()].view_as(w)
        i += w.numel()
    return masks


def mask_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    total = sum(int(m.numel()) for m in masks.values())
    return 0.0 if total == 0 else 1.0 - sum(int(m.sum()) for m in masks.values()) / total


class SuperTicketsSampler(SandwichSampler):
    """Sandwich training + BN-gamma slimming + progressive global magnitude pruning with reactivation."""

    def __init__(self, space: SearchSpace, *, target_sparsity: float = 0.5, prune_start: float = 0.1,
                 prune_every: float = 0.1, prune_step: float = 0.1, reactivate: float = 0.1,
                 slim_rho: float = 1.8e-4, slim_warmup: float = 0.07,
                 slim_params: str = r"(expand_bn|dw_bn)\.(bn\.)?weight$", prune_params: str = r"weight$",
                 prune_exclude: str | None = r"^(stem|classifier|head)\.|matrices", recal_images: int = 500,
                 recal_batch: int = 250, grad_ema: float = 0.9, n_random: int = 2,
                 choices: Mapping[str, Any] | None = None, label_smoothing: float = 0.1, kd_ratio: float = 1.0,
                 temperature: float = 1.0, zero_init_residual: bool = True, seed: int = 0) -> None:
        super().__init__(space, choices=choices, n_random=n_random, label_smoothing=label_smoothing,
                         kd_ratio=kd_ratio, temperature=temperature, zero_init_residual=zero_init_residual, seed=seed)
        if not 0.0 <= target_sparsity < 1.0:
            raise ValueError(f"target_sparsity must be in [0, 1), got {target_sparsity}")
        for name, v in (("prune_every", prune_every), ("prune_step", prune_step)):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        for name, v in (("prune_start", prune_start), ("reactivate", reactivate), ("slim_warmup", slim_warmup),
                        ("grad_ema", grad_ema)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if slim_rho < 0:
            raise ValueError(f"slim_rho must be >= 0, got {slim_rho}")
        self.target, self.prune_start, self.prune_every, self.prune_step = target_sparsity, prune_start, \
            prune_every, prune_step
        self.reactivate, self.grad_ema = reactivate, grad_ema
        self.slim_rho, self.slim_warmup = slim_rho, slim_warmup
        self.slim_re, self.prune_params, self.prune_exclude = re.compile(slim_params), prune_params, prune_exclude
        self.recal_images, self.recal_batch = recal_images, recal_batch
        self.n_events = 0 if target_sparsity == 0 else math.ceil(round(target_sparsity / prune_step, 9))
        self.events_done = 0
        self.masks: dict[str, torch.Tensor] = {}
        self.grad_score: dict[str, torch.Tensor] = {}
        self.history: list[dict[str, float]] = []
        self.model: nn.Module | None = None
        self.data: DataModule | None = None
        self.total_steps: int | None = None

    # -- schedule ---------------------------------------------------------------------------------
    def bind(self, model: nn.Module, *, steps_per_epoch: int, epochs: int, data: Any = None) -> None:
        """The trainer's model, data and run length (called by :class:`~nas.train.trainer.Trainer`)."""
        self.model, self.data, self.total_steps = model, data, steps_per_epoch * epochs

    def sparsity_after(self, events: int) -> float:
        return min(self.target, round(events * self.prune_step, 9))

    def event_step(self, i: int) -> int:
        """Global step before which prune ``i`` (0-based) happens."""
        assert self.total_steps is not None
        return math.ceil(round((self.prune_start + i * self.prune_every) * self.total_steps, 9))

    def rho(self, step: int) -> float:
        assert self.total_steps is not None
        t = step / self.total_steps
        return self.slim_rho * (1.0 if self.slim_warmup == 0 else min(1.0, t / self.slim_warmup))

    # -- steps ------------------------------------------------------------------------------------
    def plan(self, step: int, batch: Batch) -> StepPlan:
        if self.model is None or self.total_steps is None:
            raise RuntimeError("SuperTicketsSampler needs the trainer's model and run length: call bind() first")
        while self.events_done < self.n_events and step >= self.event_step(self.events_done):
            self._prune(step)
        self.apply_masks(self.model)
        return super().plan(step, batch)

    def _weights(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return prunable_parameters(model, self.prune_params, self.prune_exclude)

    @torch.no_grad()
    def _prune(self, step: int) -> None:
        assert self.model is not None
        weights = self._weights(self.model)
        forced: dict[str, torch.Tensor] | None = None
        n_react = 0
        if self.masks and self.reactivate > 0 and self.grad_score:
            forced, n_react = self._reactivated()
        self.masks = global_magnitude_masks(weights, self.sparsity_after(self.events_done + 1), forced)
        self.grad_score = {}
        self.events_done += 1
        self.apply_masks(self.model)
        self._recalibrate()
        self.history.append({"step": step, "sparsity": mask_sparsity(self.masks), "reactivated": n_react})

    def _reactivated(self) -> tuple[dict[str, torch.Tensor], int]:
        """Previously pruned entries with the largest gradient EMA, ``reactivate`` of them all."""
        pruned = {n: ~m for n, m in self.masks.items()}
        n_pruned = sum(int(p.sum()) for p in pruned.values())
        k = int(round(self.reactivate * n_pruned))
        forced = {n: torch.zeros_like(m) for n, m in pruned.items()}
        if k == 0:
            return forced, 0
        flat = torch.cat([torch.where(pruned[n], self.grad_score[n].cpu(), torch.full_like(self.grad_score[n].cpu(),
                                                                                           -1.0)).flatten()
                          for n in pruned])
        top = torch.zeros(flat.numel(), dtype=torch.bool)
        top[torch.topk(flat, k, sorted=False).indices] = True
        i = 0
        for n, m in pruned.items():
            forced[n] = top[i : i + m.numel()].view_as(m)
            i += m.numel()
        return forced, k

    def _recalibrate(self) -> None:
        if self.data is None or self.recal_images <= 0:
            return
        assert self.model is not None
        arch = self.choices.max_arch()
        size = arch_resolution(self.space, arch, self.data.image_size)
        device = next(self.model.parameters()).device
        batches = [resize_to(x, size, channels_last=False).to(device)
                   for x in self.data.calibration_batches(self.recal_images, self.recal_batch, self.seed)]
        with self.model.use(arch):  # type: ignore[operator]
            recalibrate_bn(self.model, batches)

    @torch.no_grad()
    def apply_masks(self, model: nn.Module) -> None:
        """Zero the pruned weights of ``model``."""
        if not self.masks:
            return
        for n, p in self._weights(model).items():
            if n in self.masks:
                if self.masks[n].device != p.device:
                    self.masks[n] = self.masks[n].to(p.device)
                p.mul_(self.masks[n])

    @torch.no_grad()
    def on_step_end(self, step: int, model: nn.Module) -> None:
        rho = self.rho(step)
        if rho > 0:
            for n, p in model.named_parameters():
                if p.grad is not None and self.slim_re.search(n):
                    p.grad.add_(torch.sign(p.detach()), alpha=rho)
        if not self.masks:
            return
        for n, p in self._weights(model).items():
            if n not in self.masks or p.grad is None:
                continue
            mask = self.masks[n].to(p.device)  # already there after apply_masks; a no-op
            if self.reactivate > 0:
                g = p.grad.detach().abs().float()
                old = self.grad_score.get(n)
                self.grad_score[n] = g if old is None else old.to(g.device).mul_(self.grad_ema).add_(
                    g, alpha=1 - self.grad_ema)
            p.grad.mul_(mask.to(p.grad.dtype))

    def on_epoch_end(self, epoch: int, context: TrainContext) -> None:
        self.apply_masks(context.model)  # the checkpoint and the final weights hold exact zeros

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "events_done": self.events_done, "target_sparsity": self.target,
                "masks": {n: m.cpu() for n, m in self.masks.items()},
                "grad_score": {n: s.cpu() for n, s in self.grad_score.items()}, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.events_done = int(state["events_done"])
        self.masks = {n: m.bool() for n, m in state["masks"].items()}
        self.grad_score = dict(state["grad_score"])
        self.history = [dict(h) for h in state["history"]]


@SAMPLERS.register("supertickets")
def supertickets(**kwargs: Any) -> SuperTicketsSampler:
    """SuperTickets: sandwich training with BN-gamma slimming and progressive magnitude pruning (+ reactivation)."""
    return SuperTicketsSampler(**kwargs)
