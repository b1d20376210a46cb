"""A plain, static vision transformer rebuilt from a JSON config (no supernet code), for exported ViT subnets.

The network is the one priced by :class:`search_spaces.vit.ViTSpace`: linear patch embedding (patches are cut
by reshapes, so ONNX export needs no unfold), class token or mean pooling, learned position embeddings,
pre-norm blocks whose attention uses separate q/k/v projections of ``heads * head_dim`` features, and a final
LayerNorm + linear head. Attention is written with explicit matrix products so that ``torch.utils.flop_counter``
and ONNX see the same operations the analytic MACs count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from supernets.static import STATIC_BUILDERS

__all__ = ["patchify", "attention", "StaticAttention", "StaticMLP", "StaticViTBlock", "StaticViT", "LN_EPS"]

LN_EPS = 1e-6


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, C * p * p), row-major over patches, channel-major inside a patch."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot-product attention of (B, T, heads * dh) projections; returns (B, T, heads * dh)."""
    b, t, width = q.shape
    dh = width // heads
    q, k, v = (z.reshape(b, t, heads, dh).transpose(1, 2) for z in (q, k, v))
    scores = (q * dh**-0.5) @ k.transpose(-2, -1)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, width)


class StaticAttention(nn.Module):
    def __init__(self, embed: int, heads: int, head_dim: int) -> None:
        super().__init__()
        width = heads * head_dim
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(embed, width), nn.Linear(embed, width), nn.Linear(embed, width)
        self.proj = nn.Linear(width, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(attention(self.q(x), self.k(x), self.v(x), self.heads))


class StaticMLP(nn.Module):
    def __init__(self, embed: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(embed, hidden), nn.Linear(hidden, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class StaticViTBlock(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, embed: int, heads: int, head_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed, eps=LN_EPS)
        self.attn = StaticAttention(embed, heads, head_dim)
        self.norm2 = nn.LayerNorm(embed, eps=LN_EPS)
        self.mlp = StaticMLP(embed, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class StaticViT(nn.Module):
    """Patch embedding -> [class token] + position embedding -> blocks -> LayerNorm -> pool -> linear head."""

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, n_classes: int, embed: int, head_dim: int,
                 pool: str, blocks: Sequence[dict[str, int]]) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool={pool!r} not allowed; choose 'cls' or 'mean'")
        self.patch_size, self.pool = patch_size, pool
        n_tokens = (img_size // patch_size) ** 2 + (pool == "cls")
        self.patch_embed = nn.Linear(in_chans * patch_size**2, embed)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, embed))
        self.blocks = nn.Sequential(*[StaticViTBlock(embed, b["heads"], head_dim, b["hidden"]) for b in blocks])
        self.norm = nn.LayerNorm(embed, eps=LN_EPS)
        self.head = nn.Linear(embed, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(patchify(x, self.patch_size))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(1))


@STATIC_BUILDERS.register("vit")
def _build_vit(**config: Any) -> nn.Module:
    return StaticViT(**config)
