"""NAS-Bench-201 weight-sharing supernet (Dong & Yang, ICLR 2020; the SPOS/uniform one-shot form).

Every edge of every cell holds all candidate operations; the active architecture picks one per edge (shared by
all cells, as in the benchmark). Stem, ResNet reduction blocks and classifier are fixed. ``none`` edges are
skipped instead of multiplied by zero. The exported static network keeps only the chosen operations and is
built by the ``nb201`` static builder, which imports nothing from this module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from search_spaces import NB201Arch, NB201Space
from search_spaces.nb201 import NB201_EDGES
from supernets.base import SUPERNETS, Supernet
from supernets.static import STATIC_BUILDERS

__all__ = ["NB201Supernet", "NB201Network", "make_nb201_op"]


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


_OPS = {
    "none": lambda c: Zero(),
    "skip_connect": lambda c: nn.Identity(),
    "nor_conv_1x1": lambda c: ReLUConvBN(c, c, 1, 1),
    "nor_conv_3x3": lambda c: ReLUConvBN(c, c, 3, 1),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
}


def make_nb201_op(name: str, channels: int) -> nn.Module:
    try:
        return _OPS[name](channels)
    except KeyError:
        raise ValueError(f"unknown NB201 op {name!r}; allowed: {sorted(_OPS)}") from None


class ResBlock(nn.Module):
    """NB201's reduction block: two ReLU-conv-BN (stride 2 then 1) plus avg-pool + 1x1 conv shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


def _cell_forward(x: torch.Tensor, edges: list[nn.Module | None]) -> torch.Tensor:
    """Nodes 1..3 sum their incoming non-``none`` edges; a node with no input is zero."""
    nodes = [x]
    for to in (1, 2, 3):
        acc = None
        for (t, f), op in zip(NB201_EDGES, edges):
            if t == to and op is not None:
                y = op(nodes[f])
                acc = y if acc is None else acc + y
        nodes.append(acc if acc is not None else torch.zeros_like(x))
    return nodes[3]


class _Macro(nn.Module):
    """Stem, 3 stages of N cells, reductions, BN-ReLU, pool, linear; cells supplied by a subclass."""

    def __init__(self, space: NB201Space, make_cell: Any) -> None:
        super().__init__()
        C = space.C
        self.stem = nn.Sequential(nn.Conv2d(space.in_chans, C, 3, 1, 1, bias=False), nn.BatchNorm2d(C))
        cells: list[nn.Module] = []
        for stage in range(3):
            c = C * 2**stage
            if stage:
                cells.append(ResBlock(c // 2, c))
            cells += [make_cell(c) for _ in range(space.N)]
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU())
        self.classifier = nn.Linear(4 * C, space.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.classifier(self.lastact(x).mean((2, 3)))


class _SuperCell(nn.Module):
    def __init__(self, c: int, ops: tuple[str, ...]) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleDict({op: make_nb201_op(op, c) for op in ops if op != "none"}) for _ in NB201_EDGES
        )
        self.active: tuple[str, ...] = ("none",) * len(NB201_EDGES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cell_forward(x, [None if op == "none" else e[op] for e, op in zip(self.edges, self.active)])


class _StaticCell(nn.Module):
    def __init__(self, c: int, ops: tuple[str, ...]) -> None:
        super().__init__()
        self.ops = ops
        self.edges = nn.ModuleList(nn.Identity() if op == "none" else make_nb201_op(op, c) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cell_forward(x, [None if op == "none" else e for e, op in zip(self.edges, self.ops)])


class NB201Network(_Macro):
    """The static network of one NB201 cell."""

    def __init__(self, space: NB201Space, arch: NB201Arch) -> None:
        super().__init__(space, lambda c: _StaticCell(c, arch.ops))


@STATIC_BUILDERS.register("nb201")
def _build_nb201(arch_str: str, C: int, N: int, in_chans: int, n_classes: int, resolution: int) -> nn.Module:
    space = NB201Space(C=C, N=N, in_chans=in_chans, n_classes=n_classes, resolution=resolution)
    return NB201Network(space, space.parse(arch_str))


@SUPERNETS.register("nb201")
class NB201Supernet(Supernet):
    """All candidate ops on every edge; one active op per edge shared by all cells."""

    name = "nb201"

    def __init__(self, space: NB201Space) -> None:
        if not isinstance(space, NB201Space):
            raise TypeError(f"nb201 supernet needs an NB201Space, got {type(space).__name__}")
        super().__init__(space)
        self.net = _Macro(space, lambda c: _SuperCell(c, space.ops))
        self.set_arch(space.max_arch())

    def spec(self) -> dict[str, Any]:
        return {}

    def _apply_arch(self, arch: NB201Arch) -> None:
        for cell in self.net.cells:
            if isinstance(cell, _SuperCell):
                cell.active = arch.ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _export(self, arch: NB201Arch) -> tuple[nn.Module, dict[str, Any]]:
        sp: NB201Space = self.space  # type: ignore[assignment]
        static = NB201Network(sp, arch)
        full = self.net.state_dict()
        state = {k: v for k, v in full.items() if ".edges." not in k}
        state.update({k: full[_supernet_key(k, arch)] for k in static.state_dict() if ".edges." in k})
        static.load_state_dict(state)
        config = {"type": "nb201", "arch_str": arch.to_str(), "C": sp.C, "N": sp.N, "in_chans": sp.in_chans,
                  "n_classes": sp.n_classes, "resolution": sp.resolution}
        return static, config


def _supernet_key(static_key: str, arch: NB201Arch) -> str:
    """``cells.i.edges.j.rest`` -> ``cells.i.edges.j.<op>.rest``."""
    head, rest = static_key.split(".edges.", 1)
    j, tail = rest.split(".", 1)
    return f"{head}.edges.{j}.{arch.ops[int(j)]}.{tail}"
