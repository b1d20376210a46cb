"""Once-for-All's elastic MobileNetV3 supernet (Cai et al., ICLR 2020), for any ``OFAMobileNetV3Space``.

Fixed stem and first block; per stage, ``max_depth`` elastic MBConv blocks of which the first ``d`` run; each
block has elastic kernel (centre crop + transform matrices) and elastic middle width (expand ratio); the head is
fixed. Elastic-width channel sorting (OFA's ``re_organize_middle_weights``) is :meth:`sort_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from search_spaces import LayerSpec, MBv3Arch, OFAMobileNetV3Space
from search_spaces.layers import make_divisible
from supernets.base import SUPERNETS, Supernet
from supernets.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticDepthwiseConv2d, ElasticSE
from supernets.static import ConvBNAct, MBConv, MBv3Head, make_act

__all__ = ["ElasticMBConv", "OFAMobileNetV3Supernet"]


class ElasticMBConv(nn.Module):
    """MBConv with elastic kernel and middle width; input/output channels fixed by its stage."""

    def __init__(self, in_c: int, out_c: int, max_mid: int, kernels: Sequence[int], *, stride: int, skip: bool,
                 se: bool, act: str, transform: bool) -> None:
        super().__init__()
        self.in_c, self.out_c, self.stride, self.skip, self.act_name = in_c, out_c, stride, skip, act
        self.expand_conv = ElasticConv2d(in_c, max_mid)
        self.expand_bn = ElasticBatchNorm2d(max_mid, inplace=True)
        self.dw_conv = ElasticDepthwiseConv2d(max_mid, kernels, stride, transform)
        self.dw_bn = ElasticBatchNorm2d(max_mid, inplace=True)
        self.se = ElasticSE(max_mid, make_divisible(max_mid // 4, 8)) if se else None
        self.project_conv = ElasticConv2d(max_mid, out_c)
        self.project_bn = ElasticBatchNorm2d(out_c, inplace=True)
        self.act = make_act(act, inplace=True)  # on BN outputs only, as torchvision's MobileNetV3
        self.mid = max_mid

    def set_active(self, kernel: int, mid: int) -> None:
        self.expand_conv.set_active(mid)
        self.dw_conv.set_active(mid, kernel)
        if self.se is not None:
            self.se.set_active(mid, make_divisible(mid // 4, 8))
        self.mid = mid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.expand_bn(self.expand_conv(x)))
        y = self.act(self.dw_bn(self.dw_conv(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y))
        return x + y if self.skip else y

    def spec(self, in_hw: int) -> LayerSpec:
        return LayerSpec("mbconv", in_hw, self.in_c, self.out_c, kernel=self.dw_conv.active_kernel,
                         stride=self.stride, mid_c=self.mid, skip=self.skip, se=self.se is not None,
                         act=self.act_name)

    def export(self) -> MBConv:
        block = MBConv(self.spec(in_hw=1))
        mid = self.mid
        assert block.expand is not None  # elastic blocks always expand (ratio > 1)
        block.expand.conv = self.expand_conv.export(self.in_c)
        block.expand.bn = self.expand_bn.export(mid)
        block.depthwise.conv = self.dw_conv.export()
        block.depthwise.bn = self.dw_bn.export(mid)
        if self.se is not None and block.se is not None:
            hidden = self.se.reduce.active_out
            block.se.reduce = self.se.reduce.export(mid)
            block.se.expand = self.se.expand.export(hidden)
        block.project.conv = self.project_conv.export(mid)
        block.project.bn = self.project_bn.export(self.out_c)
        return block

    @torch.no_grad()
    def sort_channels(self, keep_widths: Sequence[int] = ()) -> None:
        """Re-order middle channels by L1 importance of their outgoing weights, nested within ``keep_widths``.

        Channels inside an already-trained smaller width stay inside it (sorting happens per bucket
        [0, w1), [w1, w2), ...), so trained sub-widths remain nested; the same permutation is applied to
        every tensor that touches the middle channels, so the network function is unchanged.
        """
        n = self.expand_conv.conv.out_channels
        importance = self.project_conv.conv.weight.abs().sum(dim=(0, 2, 3))
        perm = _bucketed_order(importance, keep_widths, n)
        self.expand_conv.permute_out(perm)
        self.expand_bn.permute_out(perm)
        self.dw_conv.permute_out(perm)
        self.dw_bn.permute_out(perm)
        self.project_conv.permute_in(perm)
        if self.se is not None:
            self.se.permute_channels(perm)
            hidden = self.se.reduce.conv.out_channels
            keep_hidden = [make_divisible(w // 4, 8) for w in keep_widths]
            self.se.permute_hidden(_bucketed_order(self.se.hidden_importance(), keep_hidden, hidden))


def _bucketed_order(importance: torch.Tensor, keep_widths: Sequence[int], n: int) -> torch.Tensor:
    bounds = sorted({w for w in keep_widths if 0 < w < n})
    bucket = torch.zeros(n, dtype=torch.long, device=importance.device)
    for w in bounds:
        bucket[w:] += 1
    # Stable sort by (bucket ascending, importance descending).
    key = bucket.to(importance.dtype) * (importance.abs().max() * 2 + 1) - importance
    return torch.argsort(key, stable=True)


@SUPERNETS.register("ofa_mbv3")
class OFAMobileNetV3Supernet(Supernet):
    """The OFA MobileNetV3 supernet; ``kernel_transform`` toggles OFA's transform matrices."""

    name = "ofa_mbv3"

    def __init__(self, space: OFAMobileNetV3Space, *, kernel_transform: bool = True, dropout: float = 0.1) -> None:
        if not isinstance(space, OFAMobileNetV3Space):
            raise TypeError(f"ofa_mbv3 supernet needs an OFAMobileNetV3Space, got {type(space).__name__}")
        super().__init__(space)
        self.kernel_transform, self.dropout = kernel_transform, dropout
        w = space.widths
        self.stem = ConvBNAct(space.in_chans, w[0], 3, 2, act="hswish")
        self.first_block = MBConv(LayerSpec("mbconv", 1, w[0], w[1], kernel=3, mid_c=w[0], skip=w[0] == w[1]))
        blocks, in_c = [], w[1]
        for s in range(space.n_stages):
            for b in range(space.max_depth):
                max_mid = space.mid_channels(in_c, max(space.expands))
                blocks.append(ElasticMBConv(
                    in_c, w[2 + s], max_mid, space.kernels, stride=space.strides[s] if b == 0 else 1,
                    skip=b > 0, se=space.se[s], act=space.acts[s], transform=kernel_transform))
                in_c = w[2 + s]
        self.blocks = nn.ModuleList(blocks)
        self.final_expand = ConvBNAct(in_c, w[-2], act="hswish")
        self.head = MBv3Head(w[-2], w[-1], space.n_classes, dropout)
        self._active: list[int] = []
        self.set_arch(space.max_arch())

    def spec(self) -> dict[str, Any]:
        return {"kernel_transform": self.kernel_transform, "dropout": self.dropout}

    def _apply_arch(self, arch: MBv3Arch) -> None:
        sp: OFAMobileNetV3Space = self.space  # type: ignore[assignment]
        active, in_c = [], sp.widths[1]
        for s, depth in enumerate(arch.d):
            for b in range(depth):
                i = s * sp.max_depth + b
                k, e = arch.ks[i], arch.e[i]
                assert k is not None and e is not None
                self.blocks[i].set_active(k, sp.mid_channels(in_c, e))
                active.append(i)
                in_c = sp.widths[2 + s]
        self._active = active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for i in self._active:
            x = self.blocks[i](x)
        return self.head(self.final_expand(x))

    def _export(self, arch: MBv3Arch) -> tuple[nn.Module, dict[str, Any]]:
        from supernets.static import SequentialNet

        layers = self.space.layers(arch)  # type: ignore[attr-defined]
        net = SequentialNet(layers, self.dropout)
        exported = [_copy(self.stem), _copy(self.first_block)] + [self.blocks[i].export() for i in self._active]
        exported.append(_copy(self.final_expand))
        net.blocks = nn.Sequential(*exported)
        net.head.load_state_dict(self.head.state_dict())
        config = {"type": "mbv3", "layers": [layer.to_dict() for layer in layers], "dropout": self.dropout}
        return net, config

    @torch.no_grad()
    def sort_channels(self, keep_expands: Sequence[float] = ()) -> None:
        """Channel sorting of every block; ``keep_expands`` are the expand ratios already trained."""
        sp: OFAMobileNetV3Space = self.space  # type: ignore[assignment]
        for blk in self.blocks:
            blk.sort_channels([sp.mid_channels(blk.in_c, e) for e in keep_expands])


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)
