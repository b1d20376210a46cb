"""NAS-Bench-201 weight-sharing supernet (Dong & Yang, ICLR 2020; the SPOS/uniform one-shot form).

Every edge of every cell holds all candidate operations; the active architecture picks one per edge (shared by
all cells, as in the benchmark). Stem, ResNet reduction blocks and classifier are fixed. ``none`` edges are
skipped instead of multiplied by zero. The exported static network keeps only the chosen operations and is
built by the ``nb201`` static builder, which imports nothing from this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import NB201Arch, NB201Space
from search_spaces.nb201 import NB201_EDGES
from supernets.base import SUPERNETS, Supernet, grad_norm
from supernets.mixture import SoftArch, partial_channels
from supernets.static import STATIC_BUILDERS, ReLUConvBN

__all__ = ["NB201Supernet", "NB201Network", "make_nb201_op"]


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
    def __init__(self, c: int, ops: tuple[str, ...], names: tuple[str, ...]) -> None:
        super().__init__()
        self.ops, self.names = ops, names
        self.edges = nn.ModuleList(
            nn.ModuleDict({op: make_nb201_op(op, c) for op in ops if op != "none"}) for _ in NB201_EDGES
        )
        self.active: tuple[str, ...] = ("none",) * len(NB201_EDGES)
        self.soft: SoftArch | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.soft is not None:
            return self._mixed_forward(x, self.soft)
        return _cell_forward(x, [None if op == "none" else e[op] for e, op in zip(self.edges, self.active)])

    def _mixed_forward(self, x: torch.Tensor, soft: SoftArch) -> torch.Tensor:
        """Node j = sum_i [beta_j]_i f_ij(x_i), f_ij the edge's mixture (edge normalisation only in PC-DARTS)."""
        nodes = [x]
        for to in (1, 2, 3):
            acc = None
            for j, ((t, f), edge) in enumerate(zip(NB201_EDGES, self.edges)):
                if t != to:
                    continue
                w = soft[self.names[j]]
                y = partial_channels(nodes[f], soft.partial,
                                     lambda z, e=edge, w=w: _mixed_edge(z, e, self.ops, w, soft))
                if soft.edge_weights:
                    y = y * soft.edge_weights[f"node{to}"][f]
                acc = y if acc is None else acc + y
            nodes.append(acc)
        return nodes[3]


def _mixed_edge(z: torch.Tensor, edge: nn.ModuleDict, ops: tuple[str, ...], w: torch.Tensor,
                soft: SoftArch) -> torch.Tensor:
    """sum_o w_o op_o(z) (``none`` adds nothing but keeps its share of the weight); TangleNAS runs the convs once."""
    convs = [i for i, op in enumerate(ops) if op in ("nor_conv_1x1", "nor_conv_3x3")] if soft.entangled else []
    free = [i for i, op in enumerate(ops) if op in _PARAM_FREE]
    out = _ParamFreeMix.apply(z, w[free], tuple(ops[i] for i in free)) if free else z.mul(0.0)
    for i, op in enumerate(ops):
        if op != "none" and i not in convs and i not in free:
            out = out + w[i] * _run_op(edge[op], z)
    if convs:
        out = out + _entangled_convs(z, [edge[ops[i]] for i in convs], w[convs])
    return out


_PARAM_FREE = {"skip_connect": lambda z: z,
               "avg_pool_3x3": lambda z: F.avg_pool2d(z, 3, 1, 1, count_include_pad=False)}


class _ParamFreeMix(torch.autograd.Function):
    """sum_k w_k f_k(z) over an edge's parameter-free ops (skip, 3x3 average pool), saving only ``z`` and ``w``.

    Autograd would keep every pooled map for the logits' gradient (dL/dw_k = <g, f_k(z)>); they cost one activation
    per edge, so they are recomputed in backward instead (a pool is cheap). Mixture memory then stays near that of
    the largest cell (TangleNAS' goal); the values and both gradients are autograd's (tested).
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, w: torch.Tensor, kinds: tuple[str, ...]) -> torch.Tensor:
        ctx.kinds = kinds
        ctx.save_for_backward(z, w)
        out = None
        for k, kind in enumerate(kinds):
            y = w[k] * _PARAM_FREE[kind](z)
            out = y if out is None else out + y
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        z, w = ctx.saved_tensors
        gz = gw = None
        with torch.enable_grad():
            zz = z.detach().requires_grad_(ctx.needs_input_grad[0])
            outs = [_PARAM_FREE[kind](zz) for kind in ctx.kinds]
            if ctx.needs_input_grad[0]:
                mixed = sum(wk.detach() * o for wk, o in zip(w, outs))
                (gz,) = torch.autograd.grad(mixed, zz, g)
        if ctx.needs_input_grad[1]:
            gw = torch.stack([(g * o.detach()).sum() for o in outs]).to(w.dtype)
        return gz, gw, None


def _run_op(op: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """An op at the input's width: ReLU-conv-BN on a channel prefix when PC-DARTS feeds it C/K channels."""
    if not isinstance(op, ReLUConvBN) or z.size(1) == op[1].in_channels:
        return op(z)
    conv, bn, c = op[1], op[2], z.size(1)
    y = F.conv2d(F.relu(z), conv.weight[:c, :c], None, conv.stride, conv.padding)
    rm = None if bn.running_mean is None else bn.running_mean[:c]
    rv = None if bn.running_var is None else bn.running_var[:c]
    return F.batch_norm(y, rm, rv, bn.weight[:c], bn.bias[:c], bn.training or rm is None, bn.momentum or 0.0,
                        bn.eps)


def _entangled_convs(z: torch.Tensor, convs: list[nn.Module], w: torch.Tensor) -> torch.Tensor:
    """TangleNAS on NB201: one 3x3 conv with the superposed kernel sum_o s_o pad(W_o) (s = w / sum w, the group's
    shares), then BN whose affine parameters are sum_o w_o (gamma_o, beta_o). The group thus keeps its weight
    g = sum w in the edge sum (the released code loses it, methods/dnas.md 4.5.5) without storing another
    activation. Batch statistics in training (identical for every op of the group, so a one-hot w reproduces that
    op exactly); share-weighted running statistics in evaluation. Each op keeps its own weights: export is unchanged.
    """
    c = z.size(1)
    share = w / w.sum().clamp_min(1e-12)
    kmax = max(op[1].kernel_size[0] for op in convs)
    kernel = sum(s * _pad_kernel(op[1].weight[:c, :c], kmax) for s, op in zip(share, convs))
    y = F.conv2d(F.relu(z), kernel, None, 1, kmax // 2)
    bns = [op[2] for op in convs]
    gamma = sum(wi * bn.weight[:c] for wi, bn in zip(w, bns))
    beta = sum(wi * bn.bias[:c] for wi, bn in zip(w, bns))
    if bns[0].training:
        return F.batch_norm(y, None, None, gamma, beta, True, 0.0, bns[0].eps)
    rm = sum(s * bn.running_mean[:c] for s, bn in zip(share, bns))
    rv = sum(s * bn.running_var[:c] for s, bn in zip(share, bns))
    return F.batch_norm(y, rm, rv, gamma, beta, False, 0.0, bns[0].eps)


def _pad_kernel(weight: torch.Tensor, k: int) -> torch.Tensor:
    p = (k - weight.size(-1)) // 2
    return F.pad(weight, (p, p, p, p)) if p else weight


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
        names = tuple(g.name for g in space.genes())
        self.net = _Macro(space, lambda c: _SuperCell(c, space.ops, names))
        self.set_arch(space.max_arch())

    def spec(self) -> dict[str, Any]:
        return {}

    # -- differentiable NAS: one logit vector per edge, shared by all cells ------------------------------------
    mixture_modes = ("darts", "fbnet", "pcdarts", "tangle")

    def _mixture_choices(self, mode: str) -> dict[str, tuple[Any, ...]]:
        return {g.name: tuple(g.choices) for g in self.space.genes()}

    def mixture_edges(self, mode: str) -> dict[str, int]:
        return {f"node{to}": to for to in (1, 2, 3)} if mode == "pcdarts" else {}

    def derive(self, picked: dict[str, Any]) -> NB201Arch:
        return self.space.validate(NB201Arch(tuple(picked[g.name] for g in self.space.genes())))

    def _set_mixture(self, soft: Any) -> None:
        super()._set_mixture(soft)
        for cell in self.net.cells:
            if isinstance(cell, _SuperCell):
                cell.soft = soft

    def _apply_arch(self, arch: NB201Arch) -> None:
        for cell in self.net.cells:
            if isinstance(cell, _SuperCell):
                cell.active = arch.ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def gene_grad_norms(self, arch: NB201Arch) -> np.ndarray:
        """PA&DA credit per edge, after backward: the chosen op's parameters summed over every cell (exact, as in
        the original); parameter-free ops get 0."""
        cells = [cell for cell in self.net.cells if isinstance(cell, _SuperCell)]
        return np.array([sum((grad_norm(cell.edges[j][op]) for cell in cells), 0.0)  # type: ignore[index]
                         if op != "none" else 0.0 for j, op in enumerate(arch.ops)])

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
