"""FBNet's expected latency of a soft architecture: LAT = sum over layers of (mixture weight x table latency).

FBNet (Wu et al., CVPR 2019) prices a mixture as sum_l sum_i m_li LUT[l][i], linear in the mixture weights and so
differentiable. Here the per-choice latencies come from any hardware profile with a layer table (a
:class:`~hw_profiles.cost.CostModel`: ``local_cpu``, ``lut``, ``snapdragon855``, or analytic ``macs``), priced on
the layers the space itself describes (``space.layers(arch)``):

* OFA-MobileNetV3: per block slot, kernel and expand, the block layer's price (template architectures, as
  :class:`hw_profiles.pricing.OFAMobileNetV3Pricer`); LAT = fixed layers + sum_{stage, b} P(depth > b)
  sum_{k,e} w_k w_e T[slot, k, e], with P(depth > b) = sum_{d > b} w_d (multilinear: linear in each choice's weights).
* any other space whose cost is additive over its genes (NB201: an edge's op is one layer in every cell): the
  price difference of switching one gene away from a base architecture, LAT = base + sum_g sum_i w_gi delta_gi.

A profile that cannot price a layer of the space, or a space without ``layers()``, is a
:class:`~supernets.mixture.MixtureError` naming both.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from search_spaces import MBv3Arch, OFAMobileNetV3Space, SearchSpace
from supernets.mixture import MixtureError, SoftArch

__all__ = ["ExpectedLatency", "expected_latency"]


class ExpectedLatency:
    """``lat(soft) -> tensor`` for one space at one resolution; ``price(arch)`` for a discrete one.

    Weights of shape ``(n,)`` give a scalar; weights of shape ``(B, n)`` (a batch of soft or one-hot architectures)
    give ``B`` prices at once.
    """

    def __init__(self, space: SearchSpace, cost: Any, *, resolution: int | None = None) -> None:
        if not hasattr(space, "layers"):
            raise MixtureError(f"hardware profile {getattr(cost, 'name', cost)!r} cannot price space {space.name!r}: "
                               "the space does not describe its layers (no layers(arch)); use no latency loss")
        self.space, self.cost, self.units = space, cost, getattr(cost, "units", "")
        self.resolution = resolution
        try:
            if isinstance(space, OFAMobileNetV3Space):
                self._build_mbv3(space, resolution or max(space.resolutions))
            else:
                self._build_additive(space)
        except KeyError as exc:  # MissingEntryError: a layer with no table entry and no fallback model
            raise MixtureError(f"hardware profile {getattr(cost, 'name', cost)!r} cannot price space "
                               f"{space.name!r}: {exc}") from None

    def _price(self, specs: Sequence[Any]) -> np.ndarray:
        return np.asarray(self.cost.price_layers(list(specs)).value, dtype=float)

    def price(self, arch: Any) -> float:
        """The profile's own (additive) price of a discrete architecture, network constant included."""
        return float(self._price(self.space.layers(arch)).sum()) + float(getattr(self.cost, "network_constant", 0.0))

    # -- OFA-MobileNetV3 ----------------------------------------------------------------------------------------
    def _build_mbv3(self, sp: OFAMobileNetV3Space, r: int) -> None:
        nb, per = sp.n_stages * sp.max_depth, sp.max_depth
        table = np.zeros((nb, len(sp.kernels), len(sp.expands)))
        fixed = 0.0
        for (ki, k), (ei, e) in itertools.product(enumerate(sp.kernels), enumerate(sp.expands)):
            layers = sp.layers(MBv3Arch(ks=(k,) * nb, e=(e,) * nb, d=(per,) * sp.n_stages, r=r))
            prices = self._price(layers)
            head = len(layers) - nb - 4  # stem (+ fixed first block) before the blocks, 4 head layers after
            table[:, ki, ei] = prices[head:head + nb]
            fixed = float(prices[:head].sum() + prices[head + nb:].sum())
        self._table = torch.as_tensor(table, dtype=torch.float32)
        self._fixed = fixed + float(getattr(self.cost, "network_constant", 0.0))
        self._kind = "mbv3"

    def _lat_mbv3(self, soft: SoftArch) -> torch.Tensor:
        sp: OFAMobileNetV3Space = self.space  # type: ignore[assignment]
        ref = next(iter(soft.weights.values()))
        table = self._table.to(ref.device, ref.dtype)
        total = ref.new_tensor(self._fixed)
        for s in range(sp.n_stages):
            wd = soft[f"d{s}"]
            for b in range(sp.max_depth):
                i = s * sp.max_depth + b
                p_active = sum(wd[..., j] for j, d in enumerate(sp.depths) if d > b)
                if isinstance(p_active, int):  # no depth choice reaches this block
                    continue
                block = ((soft[f"ks{i}"] @ table[i]) * soft[f"e{i}"]).sum(-1)  # batched weights (..., n) too
                total = total + p_active * block
        return total

    # -- gene-additive spaces (NB201) ---------------------------------------------------------------------------
    def _build_additive(self, space: SearchSpace) -> None:
        genes = space.genes()
        base_idx = np.zeros(len(genes), dtype=np.int64)
        base = self.price(space.decode(base_idx))
        deltas = []
        for g, gene in enumerate(genes):
            row = []
            for i in range(len(gene.choices)):
                idx = base_idx.copy()
                idx[g] = i
                row.append(self.price(space.decode(idx)) - base)
            deltas.append(torch.tensor(row, dtype=torch.float32))
        self._names = [gene.name for gene in genes]
        self._deltas, self._base, self._kind = deltas, base, "additive"

    def _lat_additive(self, soft: SoftArch) -> torch.Tensor:
        ref = next(iter(soft.weights.values()))
        total = ref.new_tensor(self._base)
        for name, delta in zip(self._names, self._deltas):
            total = total + soft[name] @ delta.to(ref.device, ref.dtype)
        return total

    def __call__(self, soft: SoftArch) -> torch.Tensor:
        return self._lat_mbv3(soft) if self._kind == "mbv3" else self._lat_additive(soft)


def expected_latency(space: SearchSpace, profile: str, *, resolution: int | None = None,
                     **kwargs: Any) -> ExpectedLatency:
    """The expected-latency function of a named hardware profile (``create_hw_profile(profile, **kwargs)``)."""
    from hw_profiles import HW_PROFILES, create_hw_profile

    if profile not in HW_PROFILES:
        raise MixtureError(f"unknown hardware profile {profile!r}; available: {HW_PROFILES.names()}")
    try:
        cost = create_hw_profile(profile, **kwargs)
    except FileNotFoundError as exc:
        raise MixtureError(str(exc)) from None
    return ExpectedLatency(space, cost, resolution=resolution)
