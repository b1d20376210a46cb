"""Elastic ViT supernet (AutoFormer, Chen et al., ICCV 2021; HAT, Wang et al., ACL 2020), optionally with
Mixture-of-Supernets expert weights (Jawahar et al., ACL Findings 2024).

One set of full-size weights serves every architecture of a :class:`search_spaces.vit.ViTSpace`: the first
``depth`` blocks run, each sliced to the active embedding width, heads and MLP hidden units; depth sub-models
share the final LayerNorm and head. With ``mos_experts > 0`` the linears named in ``mos_layers`` (by default the
MLP's ``fc1``/``fc2``, as in the MoS code) are :class:`supernets.mos.MoSLinear` layers; ``set_arch`` computes the
architecture encoding (MoS's BERT-style global vector: embed, depth, mean heads, mean hidden, each divided by its
maximum) and hands it to every MoS layer. ``export`` materialises the mixed weights as a plain static ViT.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from search_spaces.vit import ViTArch, ViTSpace
from supernets.base import SUPERNETS, Supernet
from supernets.mos import MOS_MODES, MoSLinear, set_mos_encoding
from supernets.mos import mos_layers as find_mos_layers
from supernets.static_vit import StaticViT
from supernets.vit_ops import (
    ElasticLayerNorm,
    ElasticPatchEmbed,
    ElasticViTBlock,
    LinearFactory,
    LinearOp,
    plain_linear,
)

__all__ = ["ViTSupernet", "MOS_TARGETS", "vit_arch_encoding"]

MOS_TARGETS = ("q", "k", "v", "proj", "fc1", "fc2")
ENC_DIM = 4


def vit_arch_encoding(space: ViTSpace, arch: ViTArch) -> list[float]:
    """MoS's global architecture vector: embed, depth, mean heads, mean MLP hidden, each over its maximum."""
    blocks = space.blocks(arch)
    return [arch.embed / space.embed_dims[-1], arch.depth / space.max_depth,
            sum(b.heads for b in blocks) / len(blocks) / space.heads[-1],
            sum(b.hidden for b in blocks) / len(blocks) / space.max_hidden]


def _make_linear(name: str, in_f: int, out_f: int, *, targets: Sequence[str], experts: int, mode: str,
                 router_hidden: int) -> LinearOp:
    if name in targets:
        return MoSLinear(in_f, out_f, experts=experts, mode=mode, enc_dim=ENC_DIM, router_hidden=router_hidden,
                         init_std=0.02)
    return plain_linear(name, in_f, out_f)


@SUPERNETS.register("vit")
class ViTSupernet(Supernet):
    """Elastic ViT; ``mos_experts=0`` is plain weight sharing, ``>0`` puts MoS layers at ``mos_layers``."""

    name = "vit"

    def __init__(self, space: ViTSpace, *, mos_experts: int = 0, mos_mode: str = "layer",
                 mos_layers: Sequence[str] = ("fc1", "fc2"), router_hidden: int = 128) -> None:
        if not isinstance(space, ViTSpace):
            raise TypeError(f"vit supernet needs a ViTSpace, got {type(space).__name__}")
        if mos_mode not in MOS_MODES:
            raise ValueError(f"mos_mode={mos_mode!r} not allowed; choose one of {list(MOS_MODES)}")
        bad = sorted(set(mos_layers) - set(MOS_TARGETS))
        if bad:
            raise ValueError(f"mos_layers {bad} unknown; choose from {list(MOS_TARGETS)}")
        if mos_experts < 0:
            raise ValueError(f"mos_experts must be >= 0 (0 = plain weight sharing), got {mos_experts}")
        super().__init__(space)
        self.mos_experts, self.mos_mode, self.router_hidden = mos_experts, mos_mode, router_hidden
        self.mos_targets = tuple(mos_layers) if mos_experts else ()
        make: LinearFactory = plain_linear
        if mos_experts:
            make = functools.partial(_make_linear, targets=self.mos_targets, experts=mos_experts, mode=mos_mode,
                                     router_hidden=router_hidden)
        e = space.embed_dims[-1]
        self.embed = ElasticPatchEmbed(space.patch_size, space.in_chans, e, space.n_tokens, space.pool == "cls")
        self.blocks: list[ElasticViTBlock] = nn.ModuleList(  # type: ignore[assignment]
            ElasticViTBlock(e, space.heads[-1], space.head_dim, space.max_hidden, make) for _ in range(space.max_depth)
        )
        self.norm = ElasticLayerNorm(e)
        self.head: LinearOp = plain_linear("head", e, space.n_classes)
        self._mos = find_mos_layers(self)
        self.set_arch(space.max_arch())

    def spec(self) -> dict[str, Any]:
        return {"mos_experts": self.mos_experts, "mos_mode": self.mos_mode, "mos_layers": list(self.mos_targets),
                "router_hidden": self.router_hidden}

    def _apply_arch(self, arch: ViTArch) -> None:
        sp: ViTSpace = self.space  # type: ignore[assignment]
        self.embed.set_active(arch.embed)
        for block, dims in zip(self.blocks, sp.blocks(arch)):
            block.set_active(heads=dims.heads, hidden=dims.hidden, embed=arch.embed)
        if self._mos:
            device = self._mos[0].encoding.device
            set_mos_encoding(self._mos, torch.tensor(vit_arch_encoding(sp, arch), device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks[: self.arch.depth]:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.space.pool == "cls" else x.mean(1))  # type: ignore[attr-defined]

    def _export(self, arch: ViTArch) -> tuple[nn.Module, dict[str, Any]]:
        sp: ViTSpace = self.space  # type: ignore[assignment]
        config = sp.static_config(arch)
        net = StaticViT(**config)
        proj, cls, pos = self.embed.export()
        net.patch_embed = proj
        if net.cls_token is not None and cls is not None:
            net.cls_token.copy_(cls)
        net.pos_embed.copy_(pos)
        net.blocks = nn.Sequential(*[self.blocks[i].export(arch.embed) for i in range(arch.depth)])
        net.norm, net.head = self.norm.export(arch.embed), self.head.export(arch.embed)
        return net, {"type": "vit", **config}

