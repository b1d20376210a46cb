"""Once-for-All's elastic MobileNetV3 supernet (Cai et al., ICLR 2020), for any ``OFAMobileNetV3Space``.

Fixed stem and first block; per stage, ``max_depth`` elastic MBConv blocks of which the first ``d`` run; each
block has elastic kernel (centre crop + transform matrices) and elastic middle width (expand ratio); the head is
fixed. Elastic-width channel sorting (OFA's ``re_organize_middle_weights``) is :meth:`sort_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces import LayerSpec, MBv3Arch, OFAMobileNetV3Space
from search_spaces.layers import make_divisible
from supernets.base import SUPERNETS, Supernet, grad_norm
from supernets.mixture import SoftArch, expand_mask
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

    def forward_mixed(self, x: torch.Tensor, kernel_weights: torch.Tensor, mid_mask: torch.Tensor,
                      hidden_mask: torch.Tensor | None) -> torch.Tensor:
        """TangleNAS' entangled block at full width: the kernel choices as one superposed kernel, the expand
        choices as a channel mask on each BN's gamma and beta (and on the SE hidden units). One-hot weights compute
        exactly the discrete block: masked channels are 0 after BN, stay 0 through the activations (relu/h-swish
        of 0 is 0) and add nothing to the projection. Needs the block at full width (the supernet sets it)."""
        y = self.act(self.expand_bn.forward_masked(self.expand_conv(x), mid_mask))
        y = self.act(self.dw_bn.forward_masked(self.dw_conv.forward_mixed(y, kernel_weights), mid_mask))
        if self.se is not None:
            y = self.se(y, hidden_mask)
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
        self._arch_before_mixture: MBv3Arch | None = None
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
        if self._soft is not None:
            x = self._mixed_stages(x, self._soft)
        else:
            for i in self._active:
                x = self.blocks[i](x)
        return self.head(self.final_expand(x))

    # -- differentiable NAS: kernel and expand per block, depth per stage -------------------------------------
    mixture_modes = ("darts", "fbnet", "tangle")
    _soft: SoftArch | None = None

    def _mixture_choices(self, mode: str) -> dict[str, tuple[Any, ...]]:
        return {g.name: tuple(g.choices) for g in self.space.genes() if g.name != "r"}

    def derive(self, picked: dict[str, Any]) -> MBv3Arch:
        sp: OFAMobileNetV3Space = self.space  # type: ignore[assignment]
        nb = sp.n_stages * sp.max_depth
        return sp.validate(MBv3Arch(ks=tuple(picked[f"ks{i}"] for i in range(nb)),
                                    e=tuple(picked[f"e{i}"] for i in range(nb)),
                                    d=tuple(picked[f"d{s}"] for s in range(sp.n_stages)),
                                    r=picked.get("r", max(sp.resolutions))))

    def _set_mixture(self, soft: Any) -> None:
        if soft is not None and self._soft is None:  # every block at full width while mixing
            self._arch_before_mixture = self._arch
            self.set_arch(self.space.max_arch())
        elif soft is None and self._soft is not None and self._arch_before_mixture is not None:
            self.set_arch(self._arch_before_mixture)
        super()._set_mixture(soft)

    def _mixed_stages(self, x: torch.Tensor, soft: SoftArch) -> torch.Tensor:
        """Every block runs; a stage's output is sum_d w_d (output after its d-th block)."""
        sp: OFAMobileNetV3Space = self.space  # type: ignore[assignment]
        for s in range(sp.n_stages):
            outs = []
            for b in range(sp.max_depth):
                x = self._mixed_block(s * sp.max_depth + b, x, soft)
                outs.append(x)
            wd = soft[f"d{s}"]
            x = sum(wd[j] * outs[d - 1] for j, d in enumerate(sp.depths))
        return x

    def _mixed_block(self, i: int, x: torch.Tensor, soft: SoftArch) -> torch.Tensor:
        """TangleNAS: one entangled forward; DARTS/FBNet: sum over (kernel, expand) pairs of w_k w_e candidate(x)."""
        sp: OFAMobileNetV3Space = self.space  # type: ignore[assignment]
        blk = self.blocks[i]
        wk, we = soft[f"ks{i}"], soft[f"e{i}"]
        mids = [sp.mid_channels(blk.in_c, e) for e in sp.expands]
        full = blk.expand_conv.conv.out_channels
        hidden_full = blk.se.reduce.conv.out_channels if blk.se is not None else 0
        hiddens = [make_divisible(m // 4, 8) for m in mids]

        def masks(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            return expand_mask(w, mids, full), expand_mask(w, hiddens, hidden_full) if blk.se is not None else None

        if soft.entangled:
            return blk.forward_mixed(x, wk, *masks(we))
        eye_k, eye_e = torch.eye(len(wk), dtype=wk.dtype, device=wk.device), torch.eye(len(we), dtype=we.dtype,
                                                                                       device=we.device)
        out = None
        for b in range(len(we)):
            mid_mask, hidden_mask = masks(eye_e[b])
            for a in range(len(wk)):
                y = (wk[a] * we[b]) * blk.forward_mixed(x, eye_k[a], mid_mask, hidden_mask)
                out = y if out is None else out + y
        assert out is not None
        return out

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

    def gene_grad_norms(self, arch: MBv3Arch) -> np.ndarray:
        """PA&DA credit per gene, after backward: ``ks_i`` the depthwise kernel of block i, ``e_i`` the rest of block
        i (expand, SE, project: the widths the expand ratio selects), ``d_s`` the blocks stage s runs, ``r`` the
        whole path (every weight runs at every resolution). Inactive genes get 0."""
        sp: OFAMobileNetV3Space = self.space  # type: ignore[assignment]
        nb, out = sp.n_stages * sp.max_depth, np.zeros(len(sp.genes()))
        for i in self._active:
            blk: ElasticMBConv = self.blocks[i]  # type: ignore[assignment]
            out[i] = grad_norm(blk.dw_conv, blk.dw_bn)
            out[nb + i] = grad_norm(blk.expand_conv, blk.expand_bn, blk.se, blk.project_conv, blk.project_bn)
            out[2 * nb + i // sp.max_depth] += out[i] + out[nb + i]
        out[-1] = grad_norm(self)
        return out

    @torch.no_grad()
    def sort_channels(self, keep_expands: Sequence[float] = ()) -> None:
        """Channel sorting of every block; ``keep_expands`` are the expand ratios already trained."""
        sp: OFAMobileNetV3Space = self.space  # type: ignore[assignment]
        for blk in self.blocks:
            blk.sort_channels([sp.mid_channels(blk.in_c, e) for e in keep_expands])


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)
