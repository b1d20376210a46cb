"""Once-for-All's elastic MobileNetV3 space (Cai et al., ICLR 2020; mit-han-lab/once-for-all ``ofa_mbv3``).

Five elastic stages of up to four MBConv blocks after a fixed stem (3x3 s2 conv, h-swish) and a fixed first
block (expand 1, k3). Per block: kernel and expand ratio; per stage: depth (the first ``d`` blocks run);
per network: input resolution. Widths are ``make_divisible(w * width_mult, 8)``. Blocks beyond a stage's depth
are inactive: their kernel/expand are stored as ``None`` so equal networks are equal values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from search_spaces.base import SPACES, Gene, InvalidArchError, SearchSpace
from search_spaces.layer_table import LayerTable, TableSlot
from search_spaces.layers import LayerSpec, conv_out, layer_macs, layer_params, make_divisible

if TYPE_CHECKING:
    from search_spaces.quant_layouts import QuantLayout
    from search_spaces.sorted import SortedGrid

__all__ = ["MBv3Arch", "OFAMobileNetV3Space"]

OFA_BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
OFA_STRIDES = (2, 2, 2, 1, 2)
OFA_ACTS = ("relu", "relu", "hswish", "hswish", "hswish")
OFA_SE = (False, True, False, True, True)


@dataclass(frozen=True)
class MBv3Arch:
    """Kernel ``ks`` and expand ``e`` per block (stages x blocks, flat), depth ``d`` per stage, resolution ``r``."""

    ks: tuple[int | None, ...]
    e: tuple[int | None, ...]
    d: tuple[int, ...]
    r: int

    def __post_init__(self) -> None:
        ks, e, d = tuple(self.ks), tuple(self.e), tuple(int(x) for x in self.d)
        if len(ks) != len(e) or not d or len(ks) % len(d):
            raise InvalidArchError(
                f"ks ({len(ks)}) and e ({len(e)}) must have one entry per block, a multiple of len(d)={len(d)}"
            )
        per = len(ks) // len(d)
        active = [i % per < d[i // per] for i in range(len(ks))]
        object.__setattr__(self, "ks", tuple(int(k) if on and k is not None else None for k, on in zip(ks, active)))
        object.__setattr__(self, "e", tuple(_num(x) if on and x is not None else None for x, on in zip(e, active)))
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "r", int(self.r))

    @property
    def blocks_per_stage(self) -> int:
        return len(self.ks) // len(self.d)

    def active_blocks(self) -> list[tuple[int, int]]:
        """(stage, block) pairs that run."""
        return [(s, b) for s, depth in enumerate(self.d) for b in range(depth)]

    @property
    def id(self) -> str:
        per = self.blocks_per_stage
        stages = []
        for s, depth in enumerate(self.d):
            blocks = range(s * per, s * per + depth)
            stages.append(".".join(f"k{self.ks[i]}e{_fmt(self.e[i])}" for i in blocks))
        return f"r{self.r}-" + "-".join(stages)

    def to_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MBv3Arch:
        """Accept our dicts and OFA's (``r`` may be a one-element list, ``wid`` is ignored)."""
        r = d["r"][0] if isinstance(d["r"], (list, tuple)) else d["r"]
        unknown = set(d) - {"ks", "e", "d", "r", "wid"}
        if unknown:
            raise KeyError(f"unknown fields {sorted(unknown)}; expected ks, e, d, r")
        return cls(ks=tuple(d["ks"]), e=tuple(d["e"]), d=tuple(d["d"]), r=r)


def _num(x: Any) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else x


def _fmt(x: Any) -> str:
    return str(x)


_BLOCK_ID = re.compile(r"k(\d+)e(\d+(?:\.\d+)?)")
_STAGE_ID = re.compile(rf"{_BLOCK_ID.pattern}(?:\.{_BLOCK_ID.pattern})*")


@dataclass(frozen=True)
class OFAMobileNetV3Space(SearchSpace):
    """OFA MobileNetV3. ``width_mult`` 1.0 or 1.2 gives OFA's released variants; all fields are configurable."""

    supernet_name: ClassVar[str | None] = "ofa_mbv3"
    name: str = "ofa_mbv3"
    width_mult: float = 1.0
    base_widths: tuple[int, ...] = OFA_BASE_WIDTHS
    strides: tuple[int, ...] = OFA_STRIDES
    acts: tuple[str, ...] = OFA_ACTS
    se: tuple[bool, ...] = OFA_SE
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int | float, ...] = (3, 4, 6)
    depths: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = tuple(range(128, 225, 4))
    in_chans: int = 3
    n_classes: int = 1000
    _genes: tuple[Gene, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for fname in ("base_widths", "strides", "acts", "se", "kernels", "expands", "depths", "resolutions"):
            object.__setattr__(self, fname, tuple(getattr(self, fname)))
        n = self.n_stages
        if len(self.base_widths) != n + 4 or not (len(self.strides) == len(self.acts) == len(self.se) == n):
            raise ValueError(
                f"base_widths needs stem, first block, {n} stages, final expand and feature mix "
                f"({n + 4} values) and strides/acts/se one per stage; got {len(self.base_widths)} widths"
            )
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd, got {self.kernels}")
        nb = self.max_depth * n
        genes = [Gene(f"ks{i}", self.kernels) for i in range(nb)] + [Gene(f"e{i}", self.expands) for i in range(nb)]
        genes += [Gene(f"d{s}", self.depths) for s in range(n)] + [Gene("r", self.resolutions)]
        object.__setattr__(self, "_genes", tuple(genes))

    # -- structure --------------------------------------------------------------------------------
    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def widths(self) -> tuple[int, ...]:
        """stem, first block, stages..., final expand, feature mix: after ``make_divisible(w * mult, 8)``."""
        return tuple(make_divisible(w * self.width_mult, 8) for w in self.base_widths)

    def mid_channels(self, in_c: int, expand: float) -> int:
        """OFA: the expand ratio is relative to the block's input channels."""
        return make_divisible(round(in_c * expand), 8)

    # -- SearchSpace ------------------------------------------------------------------------------
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

    def arch_type(self) -> type:
        return MBv3Arch

    def _from_values(self, values: Sequence[Any]) -> MBv3Arch:
        nb = self.max_depth * self.n_stages
        return MBv3Arch(ks=tuple(values[:nb]), e=tuple(values[nb : 2 * nb]),
                        d=tuple(values[2 * nb : 2 * nb + self.n_stages]), r=values[-1])

    def _to_values(self, arch: MBv3Arch) -> tuple[Any, ...]:
        return (*arch.ks, *arch.e, *arch.d, arch.r)

    def validate(self, arch: Any) -> MBv3Arch:
        if isinstance(arch, MBv3Arch):
            nb = self.max_depth * self.n_stages
            if len(arch.d) != self.n_stages or len(arch.ks) != nb:
                raise InvalidArchError(
                    f"space {self.name!r} has {self.n_stages} stages x {self.max_depth} blocks = {nb} blocks; "
                    f"got {len(arch.d)} stages and {len(arch.ks)} blocks"
                )
            for gene, depth in zip(self.genes()[2 * nb : 2 * nb + self.n_stages], arch.d):
                gene.index(depth)  # depths first: they decide which kernel/expand genes are active
        return super().validate(arch)

    def active(self, arch: MBv3Arch) -> np.ndarray:
        per, n = self.max_depth, self.n_stages
        blocks = np.array([b < arch.d[s] for s in range(n) for b in range(per)])
        return np.concatenate([blocks, blocks, np.ones(n + 1, dtype=bool)])

    def _full_indices(self, arch: MBv3Arch) -> np.ndarray:
        # Inactive genes encode as 0; keep them so a depth mutation re-activates a valid (smallest) choice.
        return self.encode(arch)

    def cardinality(self) -> int:
        per_block = len(self.kernels) * len(self.expands)
        per_stage = sum(per_block**d for d in self.depths)
        return per_stage**self.n_stages * len(self.resolutions)

    def from_id(self, text: str) -> MBv3Arch:
        """Inverse of :attr:`MBv3Arch.id`: ``r<res>-`` then one ``-``-separated group per stage of its active
        blocks ``k<kernel>e<expand>`` joined by ``.`` (a group's length is the stage's depth)."""
        head, *stages = str(text).strip().split("-")
        if not re.fullmatch(r"r\d+", head):
            raise self.id_error(text, f"it must start with r<resolution>-, got {head!r}")
        if len(stages) != self.n_stages:
            raise self.id_error(text, f"it has {len(stages)} stage groups after the resolution, the space has "
                                      f"{self.n_stages}")
        ks: list[int | None] = []
        e: list[float | None] = []
        for s, group in enumerate(stages):
            if not _STAGE_ID.fullmatch(group):
                raise self.id_error(text, f"stage {s} {group!r} is not blocks k<kernel>e<expand> joined by '.'")
            blocks = [(int(k), _num(x)) for k, x in _BLOCK_ID.findall(group)]
            if len(blocks) > self.max_depth:
                raise self.id_error(text, f"stage {s} has {len(blocks)} blocks, at most {self.max_depth} allowed")
            pad = [None] * (self.max_depth - len(blocks))
            ks += [k for k, _ in blocks] + pad
            e += [x for _, x in blocks] + pad
        depths = tuple(len(_BLOCK_ID.findall(g)) for g in stages)
        try:
            return self.validate(MBv3Arch(ks=tuple(ks), e=tuple(e), d=depths, r=int(head[1:])))
        except InvalidArchError as exc:
            raise self.id_error(text, str(exc)) from None

    # -- concrete network -------------------------------------------------------------------------
    def input_shape(self, arch: MBv3Arch) -> tuple[int, int, int]:
        return (self.in_chans, arch.r, arch.r)

    def _stem(self, r: int) -> list[LayerSpec]:
        """Stem conv and the fixed first block (expand 1, k3)."""
        w, hw = self.widths, conv_out(r, 2)
        return [LayerSpec("conv", r, self.in_chans, w[0], kernel=3, stride=2, act="hswish"),
                LayerSpec("mbconv", hw, w[0], w[1], kernel=3, stride=1, mid_c=w[0], skip=w[0] == w[1])]

    def _slot_inputs(self, r: int) -> list[tuple[int, int]]:
        """(feature size, input channels) of every block slot of a full-depth network, and of the head last.

        A slot's input depends on its position alone (the first block of a stage strides and changes width)."""
        w, hw, in_c, out = self.widths, conv_out(r, 2), self.widths[1], []
        for s in range(self.n_stages):
            for b in range(self.max_depth):
                out.append((hw, in_c))
                stride = self.strides[s] if b == 0 else 1
                hw, in_c = conv_out(hw, stride), w[2 + s]
        return out + [(hw, in_c)]

    def _block(self, slot: int, hw: int, in_c: int, k: int, e: int | float) -> LayerSpec:
        s, b = divmod(slot, self.max_depth)
        return LayerSpec("mbconv", hw, in_c, self.widths[2 + s], kernel=k, stride=self.strides[s] if b == 0 else 1,
                         mid_c=self.mid_channels(in_c, e), skip=b > 0, se=self.se[s], act=self.acts[s])

    def _head(self, hw: int, in_c: int) -> list[LayerSpec]:
        fe, fm = self.widths[-2], self.widths[-1]
        return [LayerSpec("final_expand", hw, in_c, fe, act="hswish"), LayerSpec("pool", hw, fe, fe),
                LayerSpec("feature_mix", 1, fe, fm, act="hswish"), LayerSpec("classifier", 1, fm, self.n_classes)]

    def layers(self, arch: MBv3Arch) -> list[LayerSpec]:
        """The concrete network of ``arch`` (stem and head included), one :class:`LayerSpec` per layer."""
        self.validate(arch)
        inputs = self._slot_inputs(arch.r)
        out = self._stem(arch.r)
        for s in range(self.n_stages):
            for b in range(arch.d[s]):
                i = s * self.max_depth + b
                k, e = arch.ks[i], arch.e[i]
                assert k is not None and e is not None  # active blocks always carry values
                out.append(self._block(i, *inputs[i], k, e))
        return out + self._head(*inputs[-1])

    def layer_table(self) -> LayerTable:
        """Stem and head depend on the resolution; block slot ``i`` on (resolution, its stage's depth, k, e)."""
        nb, n_r = self.max_depth * self.n_stages, len(self.resolutions)
        r_gene, d0 = len(self._genes) - 1, 2 * nb
        inputs = [self._slot_inputs(r) for r in self.resolutions]
        slots = [TableSlot.build("stem+head", (r_gene,), (n_r,),
                                 lambda ri: self._stem(self.resolutions[ri]) + self._head(*inputs[ri][-1]))]
        for i in range(nb):
            s, b = divmod(i, self.max_depth)

            def make(ri: int, di: int, ki: int, ei: int, i: int = i, b: int = b) -> list[LayerSpec]:
                if b >= self.depths[di]:
                    return []
                return [self._block(i, *inputs[ri][i], self.kernels[ki], self.expands[ei])]

            slots.append(TableSlot.build(f"block{i}", (r_gene, d0 + s, i, nb + i),
                                         (n_r, len(self.depths), len(self.kernels), len(self.expands)), make))
        return LayerTable(tuple(slots))

    def active_mask(self, X: np.ndarray) -> np.ndarray:
        n_s, per = self.n_stages, self.max_depth
        nb = n_s * per
        depth = np.asarray(self.depths)[X[:, 2 * nb : 2 * nb + n_s]]  # (n, stages) depth values
        blocks = (np.arange(per)[None, None, :] < depth[:, :, None]).reshape(len(X), nb)
        return np.concatenate([blocks, blocks, np.ones((len(X), n_s + 1), dtype=bool)], axis=1)

    def quant_layout(self) -> QuantLayout:
        from search_spaces.quant_layouts import MBv3Layout

        return MBv3Layout(self)

    def sorted_grid(self, dims: Sequence[str] | None = ("depth", "expand"),
                    fixed: Mapping[str, Any] | None = None) -> SortedGrid:
        """Dims ``depth`` (every stage), ``expand`` (every block), ``kernel``, ``r``; defaults: depth x expand.

        Depth and expand are prefix-nested. A smaller kernel is the centre crop of the larger one, passed through
        OFA's transform matrices when the supernet has them, so ``kernel`` is nested only without transforms.
        """
        from search_spaces.sorted import SortedGrid, pick_dims

        space_dims = {"depth": self.depths, "expand": self.expands, "kernel": self.kernels, "r": self.resolutions}
        grid_dims, constant = pick_dims(space_dims, dims, dict(fixed or {}))
        nb, ns = self.max_depth * self.n_stages, self.n_stages

        def build(v: Mapping[str, Any]) -> MBv3Arch:
            v = {**constant, **v}
            return MBv3Arch(ks=(v["kernel"],) * nb, e=(v["expand"],) * nb, d=(v["depth"],) * ns, r=v["r"])

        return SortedGrid(self, grid_dims, build)

    def macs(self, arch: MBv3Arch) -> int:
        return sum(layer_macs(layer) for layer in self.layers(arch))

    def params(self, arch: MBv3Arch) -> int:
        """Parameters of the exported static network (kernel transform matrices baked in)."""
        return sum(layer_params(layer) for layer in self.layers(arch))


@SPACES.register("ofa_mbv3")
def ofa_mbv3(**kwargs: Any) -> OFAMobileNetV3Space:
    """OFA MobileNetV3 w1.0 (resolutions 128..224 step 4)."""
    return OFAMobileNetV3Space(**kwargs)


@SPACES.register("ofa_mbv3_w12")
def ofa_mbv3_w12(**kwargs: Any) -> OFAMobileNetV3Space:
    """OFA MobileNetV3 w1.2 (OFA trains it at 160..224)."""
    kwargs.setdefault("resolutions", tuple(range(160, 225, 4)))
    return OFAMobileNetV3Space(name="ofa_mbv3_w12", width_mult=1.2, **kwargs)


@SPACES.register("ofa_mbv3_tiny")
def ofa_mbv3_tiny(**kwargs: Any) -> OFAMobileNetV3Space:
    """A narrow, shallow variant with the same structure, for tests and small grey-scale data."""
    defaults: dict[str, Any] = dict(
        base_widths=(8, 8, 16, 16, 24, 24, 32, 64, 96), kernels=(3, 5, 7), expands=(2, 3, 4), depths=(1, 2),
        resolutions=(28, 32), in_chans=1, n_classes=10,
    )
    defaults.update(kwargs)
    return OFAMobileNetV3Space(name="ofa_mbv3_tiny", **defaults)
