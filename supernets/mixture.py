"""Architecture parameters on the elastic choices: differentiable (mixture) forwards of the existing supernets.

Differentiable NAS replaces a supernet's discrete active architecture by a *soft* one: every choice point (a gene of
the space: an NB201 edge's op; an OFA-MBv3 block's kernel and expand ratio, a stage's depth) carries a learnable
logit vector, and the supernet computes a weighted mixture over the point's choices. The weights come from the
logits in one of four modes:

* ``darts`` (Liu et al., ICLR 2019): softmax; every candidate runs (weight sharing), out = sum_i w_i op_i(x).
* ``fbnet`` (Wu et al., CVPR 2019): soft Gumbel-softmax samples at temperature tau (a fresh sample per forward),
  otherwise as ``darts``; the latency-aware loss is :func:`fbnet_loss`.
* ``pcdarts`` (Xu et al., ICLR 2020): softmax over the ops of 1/K of the channels (the rest bypass the edge),
  channel shuffle with K groups, and edge normalisation (a softmax over each node's incoming edges).
* ``tangle`` (TangleNAS, weight entanglement): one op computed once with superposed weights: kernel choices become
  one kernel (sum_k w_k pad(T_k(crop_k W))), expand choices a channel mask s_c = sum_{e: C_e > c} w_e; memory and
  compute stay near those of the largest subnet.

The supernet owns the mixture forward (its ops own their slicing, Conventions 3); this module owns the logits
(:class:`ArchParameters`, kept outside the supernet so its state dict, export and weight files are unchanged), the
soft architecture passed to ``supernet.mixed(...)`` (:class:`SoftArch`), and the mode-independent helpers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.errors import BadInputError

__all__ = ["MODES", "SoftArch", "ArchParameters", "gumbel_temperature", "fbnet_loss", "channel_shuffle",
           "partial_channels", "expand_mask", "entropy", "MixtureError", "onehot_soft", "check_mode"]

MODES = ("darts", "fbnet", "pcdarts", "tangle")


class MixtureError(BadInputError):
    """A differentiable-NAS setting the supernet or mode cannot honour (no mixture form, bad temperature, ...)."""


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise MixtureError(f"mode={mode!r} is not a differentiable-NAS mode; choose one of {list(MODES)}")
    return mode


@dataclass
class SoftArch:
    """Mixture weights per choice point (``weights[name]`` sums to 1 over that point's choices), in one mode.

    ``edge_weights`` holds PC-DARTS' per-node edge normalisation (a softmax over the node's incoming edges);
    ``partial`` is its K (1/K of the channels go through the mixture).
    """

    mode: str
    weights: dict[str, torch.Tensor]
    edge_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    partial: int = 1

    def __post_init__(self) -> None:
        check_mode(self.mode)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.weights[name]
        except KeyError:
            raise MixtureError(f"soft architecture has no choice point {name!r}; it has {sorted(self.weights)}") \
                from None

    @property
    def entangled(self) -> bool:
        return self.mode == "tangle"


def gumbel_temperature(epoch: int, *, tau0: float = 5.0, decay: float = 0.045) -> float:
    """FBNet's schedule: ``tau0 * exp(-decay * epoch)`` (epoch counted from the end of the warm-up)."""
    if tau0 <= 0:
        raise MixtureError(f"Gumbel temperature must be > 0, got tau0={tau0}")
    return tau0 * math.exp(-decay * max(0, epoch))


def fbnet_loss(ce: torch.Tensor, latency: torch.Tensor, *, alpha: float = 0.2, beta: float = 0.6) -> torch.Tensor:
    """FBNet's loss CE * alpha * log(LAT)^beta (not alpha * beta * log LAT, a known reimplementation slip).

    ``latency`` must be in a unit where it exceeds 1 (microseconds); it is clamped at e so log(LAT) >= 1 and the
    fractional power stays real.
    """
    return ce * alpha * torch.log(latency.clamp_min(math.e)) ** beta


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: view (N, groups, C/groups, H, W), swap the two channel axes, flatten."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def partial_channels(x: torch.Tensor, k: int, mixed: Any) -> torch.Tensor:
    """PC-DARTS: ``mixed`` runs on the first C/K channels, the rest bypass it; concatenated, then shuffled."""
    c = x.size(1)
    if k <= 1:
        return mixed(x)
    if c % k:
        raise MixtureError(f"partial channels need C divisible by K; got C={c}, K={k}")
    head, tail = x[:, : c // k], x[:, c // k:]
    return channel_shuffle(torch.cat([mixed(head), tail], dim=1), k)


def expand_mask(weights: torch.Tensor, widths: Sequence[int], full: int) -> torch.Tensor:
    """TangleNAS' channel mask for width choices: channel c is scaled by the weight of every width above c.

    ``weights[i]`` belongs to ``widths[i]``; returns a (full,) vector; with one-hot weights it is 1 on the chosen
    width's prefix and 0 elsewhere, so a masked full-width op computes the discrete one exactly.
    """
    ch = torch.arange(full, device=weights.device)
    ind = torch.stack([(ch < w).to(weights.dtype) for w in widths])  # (n_widths, full)
    return weights @ ind


class ArchParameters(nn.Module):
    """One learnable logit vector per choice point (and, for PC-DARTS, per node's incoming edges).

    ``choices`` maps a choice point's name (a gene name of the space) to its tuple of choice values; ``edges`` maps
    a node name to its number of incoming edges. Logits start at 1e-3 * N(0, 1) (DARTS) from ``generator``.
    """

    def __init__(self, choices: Mapping[str, Sequence[Any]], *, edges: Mapping[str, int] | None = None,
                 generator: torch.Generator | None = None, init_std: float = 1e-3) -> None:
        super().__init__()
        self.choices = {k: tuple(v) for k, v in choices.items()}
        self.edges = dict(edges or {})

        def init(n: int) -> nn.Parameter:
            return nn.Parameter(init_std * torch.randn(n, generator=generator))

        self.alpha = nn.ParameterDict({k: init(len(v)) for k, v in self.choices.items()})
        self.beta = nn.ParameterDict({k: init(n) for k, n in self.edges.items()})

    def soft(self, mode: str, *, tau: float | None = None, partial: int = 4) -> SoftArch:
        """Mixture weights for one forward (a fresh Gumbel sample in ``fbnet`` mode)."""
        check_mode(mode)
        if mode == "fbnet":
            if tau is None or not tau > 0:
                raise MixtureError(f"fbnet mode needs a Gumbel temperature > 0, got tau={tau}")
            weights = {k: F.gumbel_softmax(a, tau=tau, hard=False) for k, a in self.alpha.items()}
        else:
            weights = {k: F.softmax(a, dim=-1) for k, a in self.alpha.items()}
        edge = {k: F.softmax(b, dim=-1) for k, b in self.beta.items()} if mode == "pcdarts" else {}
        return SoftArch(mode, weights, edge, partial if mode == "pcdarts" else 1)

    def probs(self) -> dict[str, torch.Tensor]:
        return {k: F.softmax(a.detach(), dim=-1) for k, a in self.alpha.items()}

    def mean_entropy(self) -> float:
        """Mean over choice points of the softmax entropy (nats); log(n) at init, 0 when converged."""
        ents = [float(entropy(p)) for p in self.probs().values()]
        return sum(ents) / max(1, len(ents))

    def argmax(self) -> dict[str, Any]:
        """The most likely choice value per choice point."""
        return {k: self.choices[k][int(torch.argmax(p))] for k, p in self.probs().items()}

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha.values()) + list(self.beta.values())


def onehot_soft(mode: str, choices: Mapping[str, Sequence[Any]], picked: Mapping[str, Any],
                dtype: torch.dtype = torch.float32) -> SoftArch:
    """A soft architecture putting all weight on ``picked[name]`` at every choice point (tests, derivation)."""
    weights = {}
    for name, values in choices.items():
        w = torch.zeros(len(values), dtype=dtype)
        w[list(values).index(picked[name])] = 1.0
        weights[name] = w
    return SoftArch(mode, weights)
