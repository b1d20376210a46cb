"""AutoFormer / HAT-style elastic vision-transformer space (Chen et al., ICCV 2021; Wang et al., ACL 2020).

A ViT with a linear patch embedding, a class token (or mean pooling), learned position embeddings, pre-norm
blocks (LayerNorm -> multi-head attention, LayerNorm -> MLP) and a final LayerNorm + linear head. Elastic:
the embedding dimension (one for the whole network, AutoFormer), the depth (the first ``d`` blocks run), and per
block the number of heads (each of fixed ``head_dim``, so the q/k/v width is ``heads * head_dim``) and the MLP
ratio (hidden width ``round(ratio * embed)``). Blocks beyond the depth are inactive and store ``None``.

MACs and parameters are exact for the static module built by ``supernets.static_vit``: MACs count every matrix
product (patch embedding, q/k/v/projection, the two attention products, MLP, head), i.e. what
``torch.utils.flop_counter`` counts divided by two; LayerNorm, softmax, GELU and additions are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from search_spaces.base import SPACES, Gene, InvalidArchError, SearchSpace
from search_spaces.layer_table import LayerTable, TableSlot
from search_spaces.layers import LayerSpec

if TYPE_CHECKING:
    from search_spaces.sorted import SortedGrid

__all__ = ["ViTArch", "ViTSpace", "ViTBlockDims"]

POOLS = ("cls", "mean")
_BLOCK_ID = re.compile(r"h(\d+)m(\d+(?:\.\d+)?)")
_ID = re.compile(rf"e(?P<embed>\d+)-d(?P<depth>\d+)-(?P<blocks>{_BLOCK_ID.pattern}(?:\.{_BLOCK_ID.pattern})*)")


def _num(x: Any) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else x


@dataclass(frozen=True)
class ViTArch:
    """Embedding dim, depth, and per block (``max_depth`` entries) heads and MLP ratio; inactive blocks ``None``."""

    embed: int
    depth: int
    heads: tuple[int | None, ...]
    mlp: tuple[int | float | None, ...]

    def __post_init__(self) -> None:
        heads, mlp, depth = tuple(self.heads), tuple(self.mlp), int(self.depth)
        if len(heads) != len(mlp):
            raise InvalidArchError(f"heads ({len(heads)}) and mlp ({len(mlp)}) need one entry per block")
        if not 0 < depth <= len(heads):
            raise InvalidArchError(f"depth={depth} must be in [1, {len(heads)}] (one heads/mlp entry per block)")
        object.__setattr__(self, "embed", int(self.embed))
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "heads", tuple(int(h) if i < depth and h is not None else None
                                                for i, h in enumerate(heads)))
        object.__setattr__(self, "mlp", tuple(_num(m) if i < depth and m is not None else None
                                              for i, m in enumerate(mlp)))

    @property
    def id(self) -> str:
        blocks = ".".join(f"h{self.heads[i]}m{self.mlp[i]}" for i in range(self.depth))
        return f"e{self.embed}-d{self.depth}-{blocks}"

    def to_dict(self) -> dict[str, Any]:
        return {"embed": self.embed, "depth": self.depth, "heads": list(self.heads), "mlp": list(self.mlp)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTArch:
        unknown = set(d) - {"embed", "depth", "heads", "mlp"}
        if unknown:
            raise KeyError(f"unknown fields {sorted(unknown)}; expected embed, depth, heads, mlp")
        return cls(embed=d["embed"], depth=d["depth"], heads=tuple(d["heads"]), mlp=tuple(d["mlp"]))


@dataclass(frozen=True)
class ViTBlockDims:
    """The widths of one active block of a concrete network."""

    heads: int
    hidden: int


@dataclass(frozen=True)
class ViTSpace(SearchSpace):
    """Elastic ViT; the defaults are AutoFormer-S (224 px, patch 16, head dim 64, 1000 classes)."""

    supernet_name: ClassVar[str | None] = "vit"
    name: str = "vit"
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    n_classes: int = 1000
    embed_dims: tuple[int, ...] = (320, 384, 448)
    depths: tuple[int, ...] = (12, 13, 14)
    heads: tuple[int, ...] = (5, 6, 7)
    mlp_ratios: tuple[int | float, ...] = (3, 3.5, 4)
    head_dim: int = 64
    pool: str = "cls"
    _genes: tuple[Gene, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for fname in ("embed_dims", "depths", "heads", "mlp_ratios"):
            values = tuple(sorted(getattr(self, fname)))
            if not values or values[0] <= 0:
                raise ValueError(f"{fname} must be a non-empty tuple of positive values, got {values}")
            object.__setattr__(self, fname, values)
        object.__setattr__(self, "mlp_ratios", tuple(_num(m) for m in self.mlp_ratios))
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} must be a multiple of patch_size={self.patch_size}")
        if self.pool not in POOLS:
            raise ValueError(f"pool={self.pool!r} not allowed; choose one of {list(POOLS)}")
        nb = self.max_depth
        genes = [Gene("embed", self.embed_dims), Gene("depth", self.depths)]
        genes += [Gene(f"heads{i}", self.heads) for i in range(nb)] + [Gene(f"mlp{i}", self.mlp_ratios)
                                                                      for i in range(nb)]
        object.__setattr__(self, "_genes", tuple(genes))

    # -- structure --------------------------------------------------------------------------------
    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def resolution(self) -> int:
        """Input image side (every architecture of the space takes the same input)."""
        return self.img_size

    @property
    def n_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def n_tokens(self) -> int:
        return self.n_patches + (1 if self.pool == "cls" else 0)

    @property
    def patch_dim(self) -> int:
        return self.in_chans * self.patch_size**2

    @staticmethod
    def hidden(embed: int, ratio: int | float) -> int:
        """MLP hidden width of a block: ``round(ratio * embed)``."""
        return int(round(ratio * embed))

    @property
    def max_hidden(self) -> int:
        return self.hidden(self.embed_dims[-1], self.mlp_ratios[-1])

    # -- SearchSpace ------------------------------------------------------------------------------
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

    def arch_type(self) -> type:
        return ViTArch

    def _from_values(self, values: Sequence[Any]) -> ViTArch:
        nb = self.max_depth
        return ViTArch(embed=values[0], depth=values[1], heads=tuple(values[2 : 2 + nb]),
                       mlp=tuple(values[2 + nb : 2 + 2 * nb]))

    def _to_values(self, arch: ViTArch) -> tuple[Any, ...]:
        return (arch.embed, arch.depth, *arch.heads, *arch.mlp)

    def validate(self, arch: Any) -> ViTArch:
        if isinstance(arch, ViTArch) and len(arch.heads) != self.max_depth:
            raise InvalidArchError(f"space {self.name!r} has {self.max_depth} blocks; got {len(arch.heads)}")
        return super().validate(arch)

    def from_id(self, text: str) -> ViTArch:
        """Inverse of :attr:`ViTArch.id`: ``e<embed>-d<depth>-`` then one ``h<heads>m<mlp ratio>`` per block
        joined by ``.``."""
        m = _ID.fullmatch(str(text).strip())
        if m is None:
            raise self.id_error(text, "it must read e<embed>-d<depth>-h<heads>m<mlp>.h<heads>m<mlp>...")
        blocks = [(int(h), _num(r)) for h, r in _BLOCK_ID.findall(m["blocks"])]
        depth = int(m["depth"])
        if len(blocks) != depth or depth > self.max_depth:
            raise self.id_error(text, f"depth d{depth} needs {depth} blocks (at most {self.max_depth}), "
                                      f"got {len(blocks)}")
        pad = [None] * (self.max_depth - depth)
        try:
            return self.validate(ViTArch(embed=int(m["embed"]), depth=depth, heads=(*[h for h, _ in blocks], *pad),
                                         mlp=(*[r for _, r in blocks], *pad)))
        except InvalidArchError as exc:
            raise self.id_error(text, str(exc)) from None

    def active(self, arch: ViTArch) -> np.ndarray:
        blocks = np.arange(self.max_depth) < arch.depth
        return np.concatenate([[True, True], blocks, blocks])

    def cardinality(self) -> int:
        per_block = len(self.heads) * len(self.mlp_ratios)
        return len(self.embed_dims) * sum(per_block**d for d in self.depths)

    # -- concrete network -------------------------------------------------------------------------
    def blocks(self, arch: ViTArch) -> list[ViTBlockDims]:
        """Heads and MLP hidden width of each active block."""
        self.validate(arch)
        dims = []
        for i in range(arch.depth):
            h, m = arch.heads[i], arch.mlp[i]
            assert h is not None and m is not None  # active blocks always carry values
            dims.append(ViTBlockDims(heads=h, hidden=self.hidden(arch.embed, m)))
        return dims

    def input_shape(self, arch: ViTArch) -> tuple[int, int, int]:
        return (self.in_chans, self.img_size, self.img_size)

    def _block_layer(self, embed: int, heads: int, hidden: int) -> LayerSpec:
        return LayerSpec("vit_block", 1, embed, embed, mid_c=hidden, heads=heads, head_dim=self.head_dim,
                         tokens=self.n_tokens)

    def _fixed_layers(self, embed: int) -> list[LayerSpec]:
        """Patch embedding (with class token and position embedding) and the final LayerNorm + linear head."""
        return [LayerSpec("patch_embed", self.img_size, self.in_chans, embed, kernel=self.patch_size,
                          stride=self.patch_size, tokens=self.n_tokens),
                LayerSpec("vit_head", 1, embed, self.n_classes, tokens=self.n_tokens)]

    def layers(self, arch: ViTArch) -> list[LayerSpec]:
        fixed = self._fixed_layers(arch.embed)
        return fixed[:1] + [self._block_layer(arch.embed, b.heads, b.hidden) for b in self.blocks(arch)] + fixed[1:]

    def layer_table(self) -> LayerTable:
        """Patch embedding and head read the embedding dim; block ``i`` reads (embed, depth, heads_i, mlp_i)."""
        nb, sizes = self.max_depth, (len(self.embed_dims), len(self.depths), len(self.heads), len(self.mlp_ratios))
        slots = [TableSlot.build("embed+head", (0,), sizes[:1], lambda ei: self._fixed_layers(self.embed_dims[ei]))]
        for i in range(nb):
            def make(ei: int, di: int, hi: int, mi: int, i: int = i) -> list[LayerSpec]:
                if i >= self.depths[di]:
                    return []
                e = self.embed_dims[ei]
                return [self._block_layer(e, self.heads[hi], self.hidden(e, self.mlp_ratios[mi]))]

            slots.append(TableSlot.build(f"block{i}", (0, 1, 2 + i, 2 + nb + i), sizes, make))
        return LayerTable(tuple(slots))

    def active_mask(self, X: np.ndarray) -> np.ndarray:
        depth = np.asarray(self.depths)[X[:, 1]]
        blocks = np.arange(self.max_depth)[None, :] < depth[:, None]
        return np.concatenate([np.ones((len(X), 2), dtype=bool), blocks, blocks], axis=1)

    def macs(self, arch: ViTArch) -> int:
        e, t, dh = arch.embed, self.n_tokens, self.head_dim
        total = self.n_patches * self.patch_dim * e + e * self.n_classes
        for b in self.blocks(arch):
            qkv = b.heads * dh
            total += t * (4 * e * qkv + 2 * e * b.hidden) + 2 * b.heads * t * t * dh
        return total

    def params(self, arch: ViTArch) -> int:
        e, dh = arch.embed, self.head_dim
        total = (self.patch_dim + 1) * e + self.n_tokens * e + (e if self.pool == "cls" else 0)
        for b in self.blocks(arch):
            qkv = b.heads * dh
            total += 4 * e + 3 * (e + 1) * qkv + (qkv + 1) * e + (e + 1) * b.hidden + (b.hidden + 1) * e
        return total + 2 * e + (e + 1) * self.n_classes

    def sorted_grid(self, dims: Sequence[str] | None = None, fixed: Mapping[str, Any] | None = None) -> SortedGrid:
        """Dims ``depth``, ``embed``, ``heads``, ``mlp`` (each uniform across blocks); others fixed (default: max)."""
        from search_spaces.sorted import SortedGrid, pick_dims

        space_dims = {"depth": self.depths, "embed": self.embed_dims, "heads": self.heads, "mlp": self.mlp_ratios}
        grid_dims, constant = pick_dims(space_dims, dims, dict(fixed or {}))
        n = self.max_depth

        def build(v: Mapping[str, Any]) -> ViTArch:
            v = {**constant, **v}
            return ViTArch(embed=v["embed"], depth=v["depth"], heads=(v["heads"],) * n, mlp=(v["mlp"],) * n)

        return SortedGrid(self, grid_dims, build)

    def static_config(self, arch: ViTArch) -> dict[str, Any]:
        """JSON config of the concrete network (the ``vit`` static builder's keyword arguments)."""
        return {"img_size": self.img_size, "patch_size": self.patch_size, "in_chans": self.in_chans,
                "n_classes": self.n_classes, "embed": arch.embed, "head_dim": self.head_dim, "pool": self.pool,
                "blocks": [{"heads": b.heads, "hidden": b.hidden} for b in self.blocks(arch)]}


@SPACES.register("vit_small")
def vit_small(**kwargs: Any) -> ViTSpace:
    """AutoFormer-S: 224 px, patch 16, embed {320, 384, 448}, depth {12, 13, 14}, heads {5, 6, 7}, MLP {3, 3.5, 4}."""
    return ViTSpace(name="vit_small", **kwargs)


@SPACES.register("vit_tiny")
def vit_tiny(**kwargs: Any) -> ViTSpace:
    """28x28 grey-scale (Fashion-MNIST), patch 7 (16 tokens + class token), head dim 16, for tests and benches."""
    defaults: dict[str, Any] = dict(img_size=28, patch_size=7, in_chans=1, n_classes=10, embed_dims=(32, 48, 64),
                                    depths=(1, 2, 3, 4), heads=(1, 2, 4), mlp_ratios=(1, 2, 4), head_dim=16)
    defaults.update(kwargs)
    return ViTSpace(name="vit_tiny", **defaults)
