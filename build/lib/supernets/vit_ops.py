"""Elastic transformer operators (AutoFormer's weight entanglement; Chen et al., ICCV 2021).

Every elastic dimension is a prefix: the first ``e`` embedding features (LayerNorm normalises over the active
features only, with the prefix of its affine parameters), the first ``h`` heads of q/k/v (rows ``[:h * dh]``)
and of the output projection (columns), the first ``hidden`` MLP units. So sub-models are nested: a smaller
sub-model's parameters are a sub-tensor of every larger one's (SortedNet's theta_1 subset ... subset theta_N).

Linear layers are built by a ``make_linear(name, in_f, out_f)`` factory so a supernet can put Mixture-of-Supernets
layers (:class:`supernets.mos.MoSLinear`) in place of plain :class:`supernets.ops.ElasticLinear` ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from supernets.ops import ElasticLinear
from supernets.static_vit import LN_EPS, StaticAttention, StaticMLP, StaticViTBlock, attention, patchify

__all__ = ["ElasticLayerNorm", "ElasticPatchEmbed", "ElasticAttention", "ElasticMLP", "ElasticViTBlock",
           "LinearOp",
           "LinearFactory", "plain_linear"]


class LinearOp(Protocol):
    """What the blocks use of a linear layer (an :class:`ElasticLinear` or a MoS layer)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def set_active(self, out_f: int) -> None: ...

    def export(self, in_f: int) -> nn.Linear: ...


LinearFactory = Callable[[str, int, int], LinearOp]


def plain_linear(name: str, in_f: int, out_f: int) -> ElasticLinear:
    """Plain weight sharing, ViT initialisation (truncated normal, std 0.02; zero bias)."""
    layer = ElasticLinear(in_f, out_f)
    nn.init.trunc_normal_(layer.linear.weight, std=0.02)
    nn.init.zeros_(layer.linear.bias)
    return layer


class ElasticLayerNorm(nn.Module):
    """LayerNorm over the active (prefix) features of the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(features, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(-1)
        return F.layer_norm(x, (c,), self.norm.weight[:c], self.norm.bias[:c], self.norm.eps)

    def export(self, features: int) -> nn.LayerNorm:
        out = nn.LayerNorm(features, eps=self.norm.eps)
        with torch.no_grad():
            out.weight.copy_(self.norm.weight[:features])
            out.bias.copy_(self.norm.bias[:features])
        return out


class ElasticPatchEmbed(nn.Module):
    """Linear patch embedding, optional class token and learned position embedding, elastic in width."""

    def __init__(self, patch: int, in_chans: int, embed: int, n_tokens: int, cls_token: bool) -> None:
        super().__init__()
        self.patch, self.patch_dim = patch, in_chans * patch * patch
        self.proj: LinearOp = plain_linear("patch_embed", self.patch_dim, embed)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, embed))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.active_embed = embed

    def set_active(self, embed: int) -> None:
        self.proj.set_active(embed)
        self.active_embed = embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.active_embed
        x = self.proj(patchify(x, self.patch))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token[..., :e].expand(x.size(0), -1, -1), x], dim=1)
        return x + self.pos_embed[..., :e]

    def export(self) -> tuple[nn.Linear, torch.Tensor | None, torch.Tensor]:
        """The patch projection and copies of the active class token and position embedding."""
        e = self.active_embed
        cls = None if self.cls_token is None else self.cls_token[..., :e].detach().clone()
        return self.proj.export(self.patch_dim), cls, self.pos_embed[..., :e].detach().clone()


class ElasticAttention(nn.Module):
    """Multi-head self-attention with an elastic number of heads (of fixed ``head_dim``) and embedding width."""

    def __init__(self, embed: int, heads: int, head_dim: int, make_linear: LinearFactory = plain_linear) -> None:
        super().__init__()
        width = heads * head_dim
        self.head_dim = head_dim
        self.q: LinearOp = make_linear("q", embed, width)
        self.k: LinearOp = make_linear("k", embed, width)
        self.v: LinearOp = make_linear("v", embed, width)
        self.proj: LinearOp = make_linear("proj", width, embed)
        self.heads = heads

    def set_active(self, heads: int, embed: int) -> None:
        for layer in (self.q, self.k, self.v):
            layer.set_active(heads * self.head_dim)
        self.proj.set_active(embed)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(attention(self.q(x), self.k(x), self.v(x), self.heads))

    def export(self, embed: int) -> StaticAttention:
        out = StaticAttention(embed, self.heads, self.head_dim)
        width = self.heads * self.head_dim
        out.q, out.k, out.v = self.q.export(embed), self.k.export(embed), self.v.export(embed)
        out.proj = self.proj.export(width)
        return out


class ElasticMLP(nn.Module):
    def __init__(self, embed: int, hidden: int, make_linear: LinearFactory = plain_linear) -> None:
        super().__init__()
        self.fc1: LinearOp = make_linear("fc1", embed, hidden)
        self.fc2: LinearOp = make_linear("fc2", hidden, embed)
        self.hidden = hidden

    def set_active(self, hidden: int, embed: int) -> None:
        self.fc1.set_active(hidden)
        self.fc2.set_active(embed)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))

    def export(self, embed: int) -> StaticMLP:
        out = StaticMLP(embed, self.hidden)
        out.fc1, out.fc2 = self.fc1.export(embed), self.fc2.export(self.hidden)
        return out


class ElasticViTBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, embed: int, heads: int, head_dim: int, hidden: int,
                 make_linear: LinearFactory = plain_linear) -> None:
        super().__init__()
        self.norm1 = ElasticLayerNorm(embed)
        self.attn = ElasticAttention(embed, heads, head_dim, make_linear)
        self.norm2 = ElasticLayerNorm(embed)
        self.mlp = ElasticMLP(embed, hidden, make_linear)

    def set_active(self, *, heads: int, hidden: int, embed: int) -> None:
        self.attn.set_active(heads, embed)
        self.mlp.set_active(hidden, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def export(self, embed: int) -> StaticViTBlock:
        out = StaticViTBlock(embed, self.attn.heads, self.head_dim, self.mlp.hidden)
        out.norm1, out.attn = self.norm1.export(embed), self.attn.export(embed)
        out.norm2, out.mlp = self.norm2.export(embed), self.mlp.export(embed)
        return out

    @property
    def head_dim(self) -> int:
        return self.attn.head_dim
