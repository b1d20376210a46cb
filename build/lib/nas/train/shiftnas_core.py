"""ShiftNAS complexity-bin probability shift, free of any trainer (Zhang et al., "ShiftNAS: Improving One-shot
NAS via Probability Shift", ICCV 2023; no code was released, so the choices below are ours).

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

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.base import SearchSpace

__all__ = ["ComplexityBins", "ShiftNASBins", "batch_statistics", "bin_val_losses"]


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


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm normalises with the batch's own statistics; running statistics and all modes are restored."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = {m: m.training for m in model.modules()}
    saved = [{k: v.clone() for k, v in bn.named_buffers(recurse=False)} for bn in bns]
    try:
        model.eval()
        for bn in bns:
            bn.train()
        yield model
    finally:
        with torch.no_grad():
            for bn, buffers in zip(bns, saved):
                for k, v in buffers.items():
                    getattr(bn, k).copy_(v)
        for m, mode in modes.items():
            m.training = mode


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
