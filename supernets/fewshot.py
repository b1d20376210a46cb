"""A family of few-shot sub-supernets (few-shot NAS; GM-NAS, Hu et al. ICLR 2022), registered as ``fewshot``.

The family holds ``members`` copies of a base supernet (``base``: any registered supernet, e.g. ``nb201`` or
``ofa_mbv3``) and, per member, the choices it serves for every gene (the ``allowed`` buffer); ``n_active`` members
are in use. Member 0 starts with every choice; :meth:`split` hands part of one gene's choices of a member to a free
member, which starts from a copy of its weights. Every architecture is routed to the first active member whose
allowed choices hold each of its *active* genes (an inactive gene, such as the kernel of a block beyond the depth,
never decides), so ``set_arch``, forward, evaluation, search and ``export`` all use the sub-supernet that holds the
architecture. The partition is module state (buffers): checkpoints and saved weights hold the whole family, and
``load_supernet`` of a saved family routes as the trained one did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from search_spaces import SearchSpace
from supernets.base import SUPERNETS, Supernet, create_supernet

__all__ = ["FewShotSupernet"]


class FewShotSupernet(Supernet):
    """``members`` sub-supernets of ``base`` partitioning the space's choices; arch -> member routing."""

    name = "fewshot"
    allowed: torch.Tensor
    n_active: torch.Tensor

    def __init__(self, space: SearchSpace, *, base: str = "nb201", base_kwargs: dict[str, Any] | None = None,
                 members: int = 4) -> None:
        super().__init__(space)
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.base, self.base_kwargs = base, dict(base_kwargs or {})
        genes = space.genes()
        self.sizes = [len(g.choices) for g in genes]
        first = create_supernet(base, space, **self.base_kwargs)
        self.members = nn.ModuleList([first] + [create_supernet(base, space, **self.base_kwargs)
                                                for _ in range(members - 1)])
        for m in self.members[1:]:
            m.load_state_dict(first.state_dict())
        allowed = torch.zeros(members, len(genes), max(self.sizes), dtype=torch.bool)
        for i, n in enumerate(self.sizes):
            allowed[0, i, :n] = True
        self.register_buffer("allowed", allowed)
        self.register_buffer("n_active", torch.tensor(1, dtype=torch.int64))
        self.active_member = 0

    def spec(self) -> dict[str, Any]:
        return {"base": self.base, "base_kwargs": self.base_kwargs, "members": len(self.members)}

    def member(self, index: int) -> Supernet:
        return cast(Supernet, self.members[index])

    @property
    def n_members(self) -> int:
        return int(self.n_active)

    def choices_of(self, member: int) -> list[tuple[int, ...]]:
        """Allowed choice indices per gene of ``member``."""
        return [tuple(int(j) for j in torch.nonzero(self.allowed[member, i, :n]).flatten())
                for i, n in enumerate(self.sizes)]

    def route(self, arch: Any) -> int:
        """Index of the member that holds ``arch``."""
        x, active = self.space.encode(arch), self.space.active(arch)
        for m in range(self.n_members):
            ok = self.allowed[m, torch.arange(len(x)), torch.as_tensor(x)]
            if bool(torch.all(ok | torch.as_tensor(~active))):
                return m
        raise ValueError(f"no sub-supernet holds {self.space.arch_id(arch)}; the family's partition is broken")

    def sample(self, member: int, rng: np.random.Generator, fixed: dict[int, int] | None = None, *,
               tries: int = 32) -> Any:
        """A uniform architecture of ``member``'s choices, with genes in ``fixed`` set (gene index -> choice).

        Draws that route to an earlier member (a split gene inactive, e.g. beyond the depth) are redrawn, up to
        ``tries`` times, so the member's own sub-space is what trains it.
        """
        choices = self.choices_of(member)
        arch = None
        for _ in range(tries):
            x = np.array([c[rng.integers(len(c))] for c in choices])
            for gene, choice in (fixed or {}).items():
                x[gene] = choice
            arch = self.space.decode(x)
            if self.route(arch) == member:
                break
        return arch

    @torch.no_grad()
    def split(self, member: int, gene: int, group: Sequence[int]) -> int:
        """Move the choices ``group`` of ``gene`` from ``member`` to a new member (a copy); returns its index."""
        if self.n_members >= len(self.members):
            raise ValueError(f"the family is full ({len(self.members)} members); build it with more members")
        held = set(self.choices_of(member)[gene])
        group = sorted(set(int(g) for g in group))
        if not group or not set(group) < held:
            raise ValueError(f"split group {group} must be a non-empty proper subset of {sorted(held)}")
        new = self.n_members
        self.member(new).load_state_dict(self.member(member).state_dict())
        self.allowed[new].copy_(self.allowed[member])
        self.allowed[new, gene].zero_()
        self.allowed[new, gene, group] = True
        self.allowed[member, gene, group] = False
        self.n_active += 1
        return new

    @torch.no_grad()
    def reinit(self, member: int, seed: int) -> None:
        """Re-initialise ``member``'s weights as a fresh ``base`` supernet built under ``seed`` (GM-NAS restart)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = create_supernet(self.base, self.space, **self.base_kwargs)
        target = self.member(member)
        device = next(target.parameters()).device
        target.load_state_dict({k: v.to(device) for k, v in fresh.state_dict().items()})

    def _apply_arch(self, arch: Any) -> None:
        self.active_member = self.route(arch)
        self.member(self.active_member).set_arch(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member(self.active_member)(x)

    def _export(self, arch: Any) -> tuple[nn.Module, dict[str, Any]]:
        exported = self.member(self.route(arch)).export(arch)
        return exported.module, exported.config

    def sort_channels(self, keep_expands: Sequence[float] = ()) -> None:
        for m in self.members[: self.n_members]:
            sort = getattr(m, "sort_channels", None)
            if callable(sort):
                sort(keep_expands=keep_expands)


@SUPERNETS.register("fewshot")
def fewshot(space: SearchSpace, **kwargs: Any) -> FewShotSupernet:
    """Few-shot family of sub-supernets of a base supernet (GM-NAS)."""
    return FewShotSupernet(space, **kwargs)
