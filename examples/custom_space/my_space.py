"""A search space and supernet defined outside the engine, taken through every command by config alone.

From a directory holding this file (``export PYTHONPATH=$PWD``; ``my_space`` is then importable)::

    SPACE="search_space=custom search_space.name=my_space:make_space"
    python -m nas.train $SPACE supernet=custom supernet.name=my_space:ChainSupernet sampler=uniform out_dir=run
    python -m nas.evaluate checkpoint=run n_random=50 out=run/measurements.csv
    python -m nas.search accuracy=measured accuracy.checkpoint=run    # accuracy measured on the trained supernet
    python -m nas.search $SPACE accuracy=predictor accuracy.measurements=run/measurements.csv predictor=gp
    python -m nas.export results=results/search/latest rank=0 data=fashion_mnist
    python -m nas.profile hw=local_cpu space.name=my_space:make_space hw.build.context=false out=chain_cpu.json

``make_space`` returns a :class:`search_spaces.SearchSpace`; ``ChainSupernet`` is a :class:`supernets.Supernet`
(importing this module also registers it as ``chain``). The training run records these specs in its
``config.yaml``, so later commands given only ``checkpoint=run`` import this module themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_spaces import Gene, SearchSpace
from search_spaces.layers import LayerSpec
from supernets import STATIC_BUILDERS, SUPERNETS, Supernet
from supernets.ops import ElasticBatchNorm2d, ElasticConv2d

WIDTHS, KERNELS, LAYERS = (8, 16, 24), (3, 5), 3


@dataclass(frozen=True)
class ChainArch:
    widths: tuple[int, ...]
    kernels: tuple[int, ...]

    @property
    def id(self) -> str:
        return "-".join(f"w{w}k{k}" for w, k in zip(self.widths, self.kernels))

    def to_dict(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "kernels": list(self.kernels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChainArch:
        return cls(tuple(d["widths"]), tuple(d["kernels"]))


@dataclass(frozen=True)
class ChainSpace(SearchSpace):
    """A chain of conv-BN-ReLU layers with elastic width and kernel, then pooling and a linear classifier."""

    name: str = "chain"
    in_chans: int = 1
    resolution: int = 28
    n_classes: int = 10

    def genes(self) -> tuple[Gene, ...]:
        widths = tuple(Gene(f"w{i}", WIDTHS) for i in range(LAYERS))
        return widths + tuple(Gene(f"k{i}", KERNELS) for i in range(LAYERS))

    def arch_type(self) -> type:
        return ChainArch

    def _from_values(self, values: Sequence[Any]) -> ChainArch:
        return ChainArch(tuple(values[:LAYERS]), tuple(values[LAYERS:]))

    def _to_values(self, arch: ChainArch) -> tuple[Any, ...]:
        return (*arch.widths, *arch.kernels)

    def macs(self, arch: ChainArch) -> int:
        c, hw, total = self.in_chans, self.resolution, 0
        for w, k in zip(arch.widths, arch.kernels):
            total += hw * hw * k * k * c * w
            c = w
        return total + c * self.n_classes

    def layers(self, arch: ChainArch) -> list[LayerSpec]:
        """The priced layers (latency tables, ``+hw=...``): each conv, then pooling and the classifier."""
        c, out = self.in_chans, []
        for w, k in zip(arch.widths, arch.kernels):
            out.append(LayerSpec("conv", self.resolution, c, w, kernel=k))
            c = w
        return [*out, LayerSpec("pool", self.resolution, c, c), LayerSpec("classifier", 1, c, self.n_classes)]

    def params(self, arch: ChainArch) -> int:
        c, total = self.in_chans, 0
        for w, k in zip(arch.widths, arch.kernels):
            total += k * k * c * w + w + 2 * w  # conv weight and bias, BN scale and shift
            c = w
        return total + c * self.n_classes + self.n_classes


def make_space() -> ChainSpace:
    return ChainSpace()


@SUPERNETS.register("chain")
class ChainSupernet(Supernet):
    name = "chain"
    space_type = ChainSpace  # registered supernets are tried on every space by sweeps: refuse the others

    def __init__(self, space: ChainSpace) -> None:
        super().__init__(space)
        c = space.in_chans
        self.convs, self.bns = nn.ModuleList(), nn.ModuleList()
        for _ in range(LAYERS):
            self.convs.append(ElasticConv2d(c, max(WIDTHS), max(KERNELS), bias=True))
            self.bns.append(ElasticBatchNorm2d(max(WIDTHS)))
            c = max(WIDTHS)
        self.head = nn.Linear(max(WIDTHS), space.n_classes)
        self.set_arch(space.max_arch())

    def spec(self) -> dict[str, Any]:
        return {}

    def _apply_arch(self, arch: ChainArch) -> None:
        for conv, w in zip(self.convs, arch.widths):
            conv.set_active(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn, k in zip(self.convs, self.bns, self.arch.kernels):
            w = conv.active_weight(x.size(1))
            s = (w.size(-1) - k) // 2
            x = torch.relu(bn(nn.functional.conv2d(x, w[..., s:s + k, s:s + k], conv.active_bias(), padding=k // 2)))
        return nn.functional.linear(x.mean((2, 3)), self.head.weight[:, : x.size(1)], self.head.bias)

    def _export(self, arch: ChainArch) -> tuple[nn.Module, dict[str, Any]]:
        sp: ChainSpace = self.space  # type: ignore[assignment]
        config = {"type": "chain", "widths": list(arch.widths), "kernels": list(arch.kernels),
                  "in_chans": sp.in_chans, "n_classes": sp.n_classes}
        net = build_chain(**{k: v for k, v in config.items() if k != "type"})
        c = sp.in_chans
        for i, (conv, bn, w, k) in enumerate(zip(self.convs, self.bns, arch.widths, arch.kernels)):
            full, static = conv.active_weight(c), net[3 * i]
            s = (full.size(-1) - k) // 2
            static.weight.copy_(full[..., s:s + k, s:s + k])
            static.bias.copy_(conv.active_bias())
            net[3 * i + 1] = bn.export(w)
            c = w
        net[-1].weight.copy_(self.head.weight[:, :c])
        net[-1].bias.copy_(self.head.bias)
        return net, config


@STATIC_BUILDERS.register("chain")
def build_chain(widths: list[int], kernels: list[int], in_chans: int, n_classes: int) -> nn.Sequential:
    """The static network of one chain architecture (what ``load_subnet`` rebuilds from config.json)."""
    layers: list[nn.Module] = []
    c = in_chans
    for w, k in zip(widths, kernels):
        layers += [nn.Conv2d(c, w, k, padding=k // 2), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes))
