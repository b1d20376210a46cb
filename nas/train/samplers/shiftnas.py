"""ShiftNAS sampler (registry name ``shiftnas``): complexity-bin probability shift (Zhang et al., ICCV 2023).

The bins, the conditional sampler, the Gumbel bin draw and the exact logit-update rule (scalar and sign) are
:class:`ComplexityBins` and :class:`ShiftNASBins` below (free of any trainer). Each step trains one architecture
drawn inside a bin drawn from the learned bin distribution. The logits are updated from held-out losses of each
bin's probe architectures, either

* every ``every_steps`` steps (``on_step_end``) from held-out batches bound with :meth:`bind_heldout`, using batch
  statistics (cheap; the benchmark uses this), or
* every ``every_epochs`` epochs (``on_epoch_end``) from the trainer's own BN-recalibrated evaluation on its ``val``
  split (``context.evaluate``), when no held-out batches are bound.

``every_steps`` is reachable from config: when no held-out batches are bound, the trainer's ``bind`` gives the
sampler ``heldout_images`` fixed images of its ``val`` split. Updates start once ``warmup_steps`` steps are done; the
first update only records the reference snapshot.

Inside a bin, architectures come from bounded rejection sampling, or with ``generator=True`` from the paper's
bin-conditioned architecture generator (:mod:`nas.train.samplers.shiftnas_generator`), trained after every step
on its resource-constraint loss and the sampled subnet's task loss; :func:`nas.generate.generate_arch` deploys it
search-free for a target cost.

Uniform per-choice sampling concentrates subnets in the middle of the cost range (a sum of independent choices is
close to normal), so extreme-cost subnets are under-trained. ShiftNAS samples a *cost bin* first and then an
architecture inside it, and learns the bin distribution.

* **Bins** (:class:`ComplexityBins`): the space's cost (MACs by default) range, estimated from ``min_arch``,
  ``max_arch`` and a seeded sample of ``n_probe`` architectures, is cut into ``K`` equal-width bins.
* **Conditional sampling**: up to ``max_tries`` uniform draws from the space; the first one whose cost lies in the
  target bin is used; if none does, the draw whose cost is nearest to the bin's interval (the "nearest bin").
* **Bin draw**: ``probs = (1 - K*floor) * softmax(B / temperature) + floor`` with learnable logits ``B`` (zeros at
  start), and the bin is drawn by the Gumbel-max trick ``argmax(log probs + Gumbel noise)`` (the hard sample of
  Gumbel-softmax). ``floor`` keeps every bin alive.
* **Update** (every ``every`` steps after ``warmup_steps``; :meth:`ShiftNASBins.update`): each bin owns a fixed
  seeded probe set of architectures; its validation loss ``L_k(w)`` is the mean cross-entropy of its probes on fixed
  held-out batches (batch statistics, running BN statistics untouched). With ``w_prev`` the weights at the previous
  update (the two snapshots of the paper's finite-difference Eq. 8), the exact scalar is

      delta_k = L_k(w_t) - L_k(w_prev)
      B <- B - lr * delta / (mean_k |delta_k| + 1e-12)

  i.e. a gradient-descent step on ``B`` along the paper's ``grad_B ~ L_val(w_t) - L_val(w_{t-1})``, normalised so
  ``lr`` is in logits per update. Sign: a bin whose validation loss is still *falling* (delta < 0, still learning,
  under-trained) gains probability; a bin whose loss stalled or rose loses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.data import Batch
from nas.train.losses import LossRecipe
from nas.train.plan import StepPlan, SubnetTask, TaskResult
from nas.train.resize import arch_resolution, resize_to
from nas.train.samplers.base import SAMPLERS, Sampler, TrainContext
from nas.train.samplers.shiftnas_generator import GeneratorTrainer
from search_spaces import SearchSpace
from search_spaces.errors import BadInputError, CorruptFileError
from supernets.bn import batch_statistics

__all__ = ['ComplexityBins', 'ShiftNASBins', 'bin_val_losses', 'ShiftNASSampler']


def _default_cost(space: SearchSpace) -> Callable[[Any], float]:
    macs = getattr(space, "macs", None)
    if not callable(macs):
        raise TypeError(f"space {space.name!r} has no macs(arch); pass cost_fn=... to bin another cost")
    return macs


class ComplexityBins:
    """Equal-width cost bins over a space and conditional (in-bin) sampling."""

    def __init__(self, space: SearchSpace, *, n_bins: int = 8, cost_fn: Callable[[Any], float] | None = None,
                 n_probe: int = 2048, seed: int = 0, max_tries: int = 64) -> None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.space, self.n_bins, self.max_tries = space, n_bins, max_tries
        self.cost_fn = cost_fn or _default_cost(space)
        rng = np.random.default_rng(seed)
        costs = [self.cost_fn(a) for a in (space.min_arch(), space.max_arch())]
        costs += [self.cost_fn(space.sample(rng)) for _ in range(n_probe)]
        lo, hi = float(min(costs)), float(max(costs))
        if hi <= lo:
            raise ValueError(f"space {space.name!r} has a single cost value {lo}; nothing to bin")
        self.edges = np.linspace(lo, hi, n_bins + 1)

    def bin_of(self, cost: float) -> int:
        return int(np.clip(np.searchsorted(self.edges, cost, side="right") - 1, 0, self.n_bins - 1))

    def distance(self, cost: float, k: int) -> float:
        """0 inside bin ``k``, else the cost gap to its interval."""
        return float(max(self.edges[k] - cost, cost - self.edges[k + 1], 0.0))

    def sample_in_bin(self, k: int, rng: np.random.Generator) -> tuple[Any, bool]:
        """(architecture, whether it lies in bin ``k``): bounded rejection, then the nearest draw."""
        if not 0 <= k < self.n_bins:
            raise ValueError(f"bin index must lie in [0, {self.n_bins - 1}], got {k}")
        best, best_gap = None, np.inf
        for _ in range(self.max_tries):
            arch = self.space.sample(rng)
            gap = self.distance(self.cost_fn(arch), k)
            if gap == 0.0:
                return arch, True
            if gap < best_gap:
                best, best_gap = arch, gap
        return best, False


class ShiftNASBins:
    """Learnable bin logits, Gumbel bin draws and the finite-difference logit update."""

    def __init__(self, bins: ComplexityBins, *, lr: float = 0.5, temperature: float = 1.0, floor: float = 0.02,
                 probes_per_bin: int = 2, probe_seed: int = 0) -> None:
        if not 0.0 <= floor * bins.n_bins <= 1.0:
            raise ValueError(f"floor must satisfy 0 <= floor * n_bins <= 1 (n_bins={bins.n_bins}), got {floor}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.bins, self.lr, self.temperature, self.floor = bins, lr, temperature, floor
        self.logits = np.zeros(bins.n_bins)
        self.prev_losses: np.ndarray | None = None
        self.n_updates = 0
        rng = np.random.default_rng(probe_seed)
        self.probes = [[bins.sample_in_bin(k, rng)[0] for _ in range(probes_per_bin)] for k in range(bins.n_bins)]

    def probs(self) -> np.ndarray:
        z = self.logits / self.temperature
        e = np.exp(z - z.max())
        return (1.0 - self.bins.n_bins * self.floor) * e / e.sum() + self.floor

    def draw_bin(self, rng: np.random.Generator) -> int:
        """Gumbel-max draw from :meth:`probs`."""
        return int(np.argmax(np.log(self.probs()) + rng.gumbel(size=self.bins.n_bins)))

    def sample(self, rng: np.random.Generator) -> tuple[Any, int]:
        k = self.draw_bin(rng)
        return self.bins.sample_in_bin(k, rng)[0], k

    def update(self, losses: Sequence[float]) -> np.ndarray | None:
        """Apply the documented rule given this snapshot's per-bin losses; returns delta (None on the first call)."""
        now = np.asarray(losses, dtype=np.float64)
        if now.shape != (self.bins.n_bins,):
            raise ValueError(f"need one loss per bin ({self.bins.n_bins}), got shape {now.shape}")
        prev, self.prev_losses = self.prev_losses, now
        if prev is None:
            return None
        delta = now - prev
        self.logits = self.logits - self.lr * delta / (np.abs(delta).mean() + 1e-12)
        self.n_updates += 1
        return delta

    def state_dict(self) -> dict[str, Any]:
        return {"logits": self.logits.tolist(), "n_updates": self.n_updates,
                "prev_losses": None if self.prev_losses is None else self.prev_losses.tolist(),
                "probes": [[self.bins.space.to_dict(a) for a in ps] for ps in self.probes]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["logits"]) != self.bins.n_bins:
            raise ValueError(f"state holds {len(state['logits'])} bin logits, this sampler has {self.bins.n_bins}")
        self.logits = np.asarray(state["logits"], dtype=np.float64)
        self.n_updates = int(state["n_updates"])
        prev = state["prev_losses"]
        self.prev_losses = None if prev is None else np.asarray(prev, dtype=np.float64)
        self.probes = [[self.bins.space.from_dict(d) for d in ps] for ps in state["probes"]]


@torch.no_grad()
def bin_val_losses(supernet: Any, probes: Sequence[Sequence[Any]], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Mean cross-entropy of each bin's probe architectures over the held-out ``batches`` (re-iterable)."""
    batches = list(batches)
    if not batches:
        raise ValueError("held-out split yields no batches")
    out = np.zeros(len(probes))
    with batch_statistics(supernet):
        for k, archs in enumerate(probes):
            losses = []
            for arch in archs:
                with supernet.use(arch):
                    for x, y in batches:
                        losses.append(float(nn.functional.cross_entropy(supernet(x.to(device)), y.to(device))))
            out[k] = float(np.mean(losses))
    return out


class ShiftNASSampler(Sampler):
    tags = ("subnet",)

    def __init__(self, space: SearchSpace, *, n_bins: int = 8, every_steps: int | None = None,
                 every_epochs: int | None = 1, warmup_steps: int = 0, lr: float = 0.5, temperature: float = 1.0,
                 floor: float = 0.02, probes_per_bin: int = 2, max_tries: int = 64, n_probe: int = 2048,
                 cost_fn: Callable[[Any], float] | None = None, label_smoothing: float = 0.0,
                 heldout_images: int = 256, generator: bool = False, gen_lr: float = 3e-3, gen_lam: float = 1.0,
                 gen_task_weight: float = 1.0, gen_tau: float = 1.0, gen_hidden: int = 64, seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        for name, v in (("every_steps", every_steps), ("every_epochs", every_epochs)):
            if v is not None and v < 1:
                raise BadInputError(f"{name} must be >= 1 or None, got {v}")
        if warmup_steps < 0:
            raise BadInputError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.every_steps, self.every_epochs, self.warmup_steps = every_steps, every_epochs, warmup_steps
        bins = ComplexityBins(space, n_bins=n_bins, cost_fn=cost_fn, n_probe=n_probe, seed=seed, max_tries=max_tries)
        self.shift = ShiftNASBins(bins, lr=lr, temperature=temperature, floor=floor, probes_per_bin=probes_per_bin,
                                  probe_seed=seed + 1)
        self.recipe = LossRecipe(hard=1.0, label_smoothing=label_smoothing)
        self.heldout: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.steps_done = 0
        self.last_bin = -1
        self.history: list[list[float]] = []
        self.heldout_images = heldout_images
        self.generator = GeneratorTrainer(space, bins.edges, bins.cost_fn, hidden=gen_hidden, lr=gen_lr,
                                          lam=gen_lam, task_weight=gen_task_weight, tau=gen_tau,
                                          seed=seed + 2) if generator else None

    def bind(self, model: nn.Module, *, steps_per_epoch: int, epochs: int, data: Any = None) -> None:
        """Step-wise updates without bound batches use ``heldout_images`` fixed images of the data's val split."""
        if not self.every_steps or self.heldout is not None or data is None:
            return
        idx = data.fixed_subset("val", self.heldout_images, self.seed)
        size = arch_resolution(self.space, self.space.max_arch(), data.image_size)
        batches = []
        for i in range(0, len(idx), 128):
            x, y = data.get("val", idx[i : i + 128])
            batches.append((resize_to(x, size, channels_last=False), y))
        self.bind_heldout(batches)

    @property
    def bins(self) -> ComplexityBins:
        return self.shift.bins

    def probs(self) -> np.ndarray:
        return self.shift.probs()

    def bind_heldout(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fixed held-out (images, labels) batches for step-wise updates (images at the space's resolution)."""
        if not batches:
            raise BadInputError("bind_heldout needs at least one (images, labels) batch")
        self.heldout = list(batches)

    def plan(self, step: int, batch: Batch) -> StepPlan:
        if self.generator is None:
            arch, self.last_bin = self.shift.sample(self.rng)
        else:
            self.last_bin = self.shift.draw_bin(self.rng)
            arch = self.generator.sample(self.last_bin)
        return StepPlan([SubnetTask(arch, self.recipe, tag="subnet")])

    def _apply(self, losses: np.ndarray) -> None:
        self.shift.update(losses)
        self.history.append([float(x) for x in self.probs()])

    def observe(self, result: TaskResult, model: nn.Module) -> None:
        if self.generator is not None:
            self.generator.learn(result.loss)

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
                "last_bin": self.last_bin, "history": self.history, "edges": self.bins.edges.tolist(),
                "generator": None if self.generator is None else self.generator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not np.allclose(state["edges"], self.bins.edges):
            raise CorruptFileError(f"checkpoint bins {state['edges']} differ from this sampler's "
                                   f"{self.bins.edges.tolist()}")
        super().load_state_dict(state)
        self.shift.load_state_dict(state["shift"])
        self.steps_done, self.last_bin = int(state["steps_done"]), int(state["last_bin"])
        self.history = [list(h) for h in state["history"]]
        if self.generator is not None:
            if state.get("generator") is None:
                raise ValueError("this sampler has generator=True but the checkpoint holds no generator state")
            self.generator.load_state_dict(state["generator"])


@SAMPLERS.register("shiftnas")
def shiftnas(**kwargs: Any) -> ShiftNASSampler:
    """ShiftNAS complexity-bin probability shift with conditional in-bin sampling."""
    return ShiftNASSampler(**kwargs)
