"""ShiftNAS architecture generator (Zhang et al., ICCV 2023, section 3.3; no code was released, choices are ours).

:class:`ArchGenerator` is conditioned on a complexity bin: an embedding of the bin starts an LSTM cell (64 hidden
units) that emits, one gene after another, a distribution over that gene's choices (one linear head per gene; the
previous decision is fed back). Decisions are drawn with straight-through Gumbel-softmax (hard one-hot forward,
soft gradient) from its own seeded ``torch.Generator``, so a run resumes exactly.

* **Resource-constraint loss** ``L_RC = ((sum_i sum_j p'_ij c_ij - C) / (hi - lo))^2`` with ``p'`` the drawn
  straight-through one-hots (as the paper's Gumbel-softmax ``p'``, so each draw, not only the mean, is pulled into
  the bin): ``c_ij`` is a per-choice cost
  table (:class:`LinearCost`, a least-squares fit of the space's cost on one-hot encodings of sampled
  architectures, the same additive form as the paper's ``b_j^i``), ``C`` the centre of the target bin, normalised
  by the cost range so ``lam`` is unit-free.
* **Task signal**: the paper back-propagates the task loss through weight-entangled soft masks in the supernet. Our
  supernets have no soft-mask forward, so the task loss of the sampled subnet reaches the generator by the
  score-function estimator ``(loss - baseline) * log p(arch)`` with a moving-average baseline per bin.
* **Search-free deployment** (:meth:`ArchGenerator.best`): the most probable choice per gene for a bin, no
  sampling, no search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.base import SearchSpace

__all__ = ["LinearCost", "ArchGenerator", "GeneratorTrainer"]


class LinearCost:
    """Additive per-choice cost ``cost(arch) ~ b + sum_i c[i, x_i]`` fitted by least squares on sampled archs."""

    def __init__(self, space: SearchSpace, cost_fn: Callable[[Any], float], *, n: int = 2048, seed: int = 0,
                 table: Sequence[Sequence[float]] | None = None, bias: float | None = None) -> None:
        self.sizes = [len(g.choices) for g in space.genes()]
        if table is not None and bias is not None:
            self.table, self.bias = [np.asarray(t, dtype=np.float64) for t in table], float(bias)
            return
        rng = np.random.default_rng(seed)
        archs = [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(n)]
        x = np.stack([self.one_hot(space.encode(a)) for a in archs])
        y = np.asarray([cost_fn(a) for a in archs], dtype=np.float64)
        coef, *_ = np.linalg.lstsq(np.hstack([x, np.ones((len(x), 1))]), y, rcond=None)
        self.bias = float(coef[-1])
        offsets = np.cumsum([0, *self.sizes])
        self.table = [coef[offsets[i] : offsets[i + 1]] for i in range(len(self.sizes))]

    def one_hot(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(sum(self.sizes))
        offsets = np.cumsum([0, *self.sizes])
        out[offsets[:-1] + np.asarray(x)] = 1.0
        return out

    def expected(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Differentiable surrogate cost of per-gene choice distributions (or one-hots)."""
        terms = [(p * torch.as_tensor(t, dtype=p.dtype)).sum() for p, t in zip(probs, self.table)]
        return torch.stack(terms).sum() + self.bias

    def state(self) -> dict[str, Any]:
        return {"table": [t.tolist() for t in self.table], "bias": self.bias}


class ArchGenerator(nn.Module):
    """Bin-conditioned LSTM that emits one choice distribution per gene."""

    def __init__(self, sizes: Sequence[int], n_bins: int, *, hidden: int = 64) -> None:
        super().__init__()
        self.sizes, self.n_bins, self.hidden = [int(s) for s in sizes], int(n_bins), int(hidden)
        self.bin_embed = nn.Embedding(n_bins, hidden)
        self.choice_embed = nn.ModuleList(nn.Linear(s, hidden, bias=False) for s in self.sizes)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, s) for s in self.sizes)

    def forward(self, k: int, *, tau: float = 1.0, generator: torch.Generator | None = None,
                greedy: bool = False) -> tuple[list[int], list[torch.Tensor], torch.Tensor]:
        """(choice indices, per-gene straight-through one-hots, log-probability of the drawn choices) for bin ``k``."""
        if not 0 <= k < self.n_bins:
            raise ValueError(f"bin index must lie in [0, {self.n_bins - 1}], got {k}")
        inp = self.bin_embed(torch.tensor([k]))
        h = c = torch.zeros(1, self.hidden)
        idx, probs, logp = [], [], torch.zeros(())
        for i in range(len(self.sizes)):
            h, c = self.cell(inp, (h, c))
            logits = self.heads[i](h)[0]
            if greedy:
                j = int(logits.argmax())
                hard = F.one_hot(torch.tensor(j), self.sizes[i]).to(logits.dtype)
            else:
                u = torch.rand(logits.shape, generator=generator).clamp_(1e-10, 1 - 1e-10)
                soft = F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)
                j = int(soft.argmax())
                hard = F.one_hot(torch.tensor(j), self.sizes[i]).to(soft.dtype) - soft.detach() + soft
            log_p = F.log_softmax(logits, dim=-1)
            idx.append(j)
            probs.append(hard)
            logp = logp + log_p[j]
            inp = self.choice_embed[i](hard)[None]
        return idx, probs, logp

    def best(self, k: int) -> list[int]:
        """Search-free deployment: the greedy (most probable) choice per gene for bin ``k``."""
        with torch.no_grad():
            return self.forward(k, greedy=True)[0]


class GeneratorTrainer:
    """The generator, its Adam optimizer, cost surrogate and the per-step update (``lam * L_RC`` + score term)."""

    def __init__(self, space: SearchSpace, edges: np.ndarray, cost_fn: Callable[[Any], float], *, hidden: int = 64,
                 lr: float = 1e-3, lam: float = 1.0, task_weight: float = 1.0, tau: float = 1.0,
                 baseline_momentum: float = 0.9, seed: int = 0, n_fit: int = 2048) -> None:
        if lam < 0 or task_weight < 0 or tau <= 0:
            raise ValueError(f"need lam >= 0, task_weight >= 0 and tau > 0, got {lam}, {task_weight}, {tau}")
        self.space, self.edges = space, np.asarray(edges, dtype=np.float64)
        self.cost = LinearCost(space, cost_fn, n=n_fit, seed=seed)
        self.lam, self.task_weight, self.tau, self.momentum = lam, task_weight, tau, baseline_momentum
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = ArchGenerator(self.cost.sizes, len(self.edges) - 1, hidden=hidden)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.baseline = np.full(len(self.edges) - 1, np.nan)
        self._pending: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def target(self, k: int) -> float:
        return 0.5 * (self.edges[k] + self.edges[k + 1])

    def rc_loss(self, probs: Sequence[torch.Tensor], k: int) -> torch.Tensor:
        span = float(self.edges[-1] - self.edges[0])
        return ((self.cost.expected(probs) - self.target(k)) / span) ** 2

    def sample(self, k: int) -> Any:
        """Draw an architecture for bin ``k``; its log-probability and RC loss wait for :meth:`learn`."""
        idx, probs, logp = self.net(k, tau=self.tau, generator=self.gen)
        self._pending = (k, logp, self.rc_loss(probs, k))
        return self.space.decode(np.asarray(idx))

    def learn(self, task_loss: float | None) -> float:
        """One Adam step on ``lam * L_RC`` (+ the score-function task term); returns L_RC."""
        if self._pending is None:
            return float("nan")
        k, logp, rc = self._pending
        self._pending = None
        loss = self.lam * rc
        if task_loss is not None and self.task_weight > 0:
            base = self.baseline[k]
            if np.isfinite(base):
                loss = loss + self.task_weight * (task_loss - base) * logp
            self.baseline[k] = task_loss if not np.isfinite(base) else \
                self.momentum * base + (1 - self.momentum) * task_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(rc.detach())

    def deploy(self, k: int) -> Any:
        return self.space.decode(np.asarray(self.net.best(k)))

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "baseline": self.baseline.tolist(), "cost": self.cost.state(), "hidden": self.net.hidden,
                "edges": self.edges.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.baseline = np.asarray(state["baseline"], dtype=np.float64)
        self.cost = LinearCost(self.space, lambda a: 0.0, table=state["cost"]["table"], bias=state["cost"]["bias"])
