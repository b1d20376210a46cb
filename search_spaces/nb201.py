"""NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 4 nodes, 6 edges, 5 candidate operations per edge.

The architecture string is the benchmark's ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. The macro network (stem,
3 stages of N cells at C, 2C, 4C channels joined by ResNet reduction blocks, BN-ReLU, pool, linear) is described
by the space's ``C``, ``N``, input channels, classes and resolution so MACs and parameters are exact.

NAS-Bench-201's own index order is a fixed permutation stored in the benchmark files, not something a formula
produces; :class:`NB201IndexMap` reads it from any table with an architecture-string column (row i = index i).
``NB201Space.ordinal`` is this project's own base-5 enumeration.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from search_spaces.base import SPACES, Gene, InvalidArchError, SearchSpace
from search_spaces.layer_table import LayerTable, TableSlot
from search_spaces.layers import LayerSpec, conv_out

if TYPE_CHECKING:
    from search_spaces.quant_layouts import QuantLayout

__all__ = ["NB201Arch", "NB201Space", "NB201IndexMap", "NB201_OPS", "NB201_EDGES"]

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (to_node, from_node) of each of the six edges, in string order.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
PARAM_FREE_OPS = ("none", "skip_connect", "avg_pool_3x3")


@dataclass(frozen=True)
class NB201Arch:
    """One operation name per edge, in the benchmark string's edge order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))

    @property
    def id(self) -> str:
        return self.to_str()

    def to_str(self) -> str:
        nodes, i = [], 0
        for node in (1, 2, 3):
            nodes.append("|" + "|".join(f"{self.ops[i + j]}~{j}" for j in range(node)) + "|")
            i += node
        return "+".join(nodes)

    @classmethod
    def from_str(cls, s: str) -> NB201Arch:
        ops: list[str] = []
        nodes = s.strip().split("+")
        if len(nodes) != 3:
            raise InvalidArchError(f"NB201 string needs 3 '+'-separated nodes, got {s!r}")
        for node, part in enumerate(nodes, start=1):
            items = [t for t in part.strip("|").split("|") if t]
            if len(items) != node:
                raise InvalidArchError(f"node {node} of {s!r} must have {node} inputs, got {len(items)}")
            for j, item in enumerate(items):
                op, _, src = item.partition("~")
                if src != str(j):
                    raise InvalidArchError(f"edge {item!r} in {s!r} must read from node {j}")
                ops.append(op)
        return cls(tuple(ops))

    def to_dict(self) -> dict[str, Any]:
        return {"arch_str": self.to_str()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NB201Arch:
        return cls.from_str(d["arch_str"]) if "arch_str" in d else cls(tuple(d["ops"]))


@dataclass(frozen=True)
class NB201Space(SearchSpace):
    """The cell space plus the macro-network settings needed to price it."""

    supernet_name: ClassVar[str | None] = "nb201"
    name: str = "nb201"
    ops: tuple[str, ...] = NB201_OPS
    C: int = 16
    N: int = 5
    in_chans: int = 3
    n_classes: int = 10
    resolution: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        unknown = set(self.ops) - set(NB201_OPS)
        if unknown:
            raise ValueError(f"unknown NB201 ops {sorted(unknown)}; allowed: {list(NB201_OPS)}")

    def genes(self) -> tuple[Gene, ...]:
        return tuple(Gene(f"edge{t}<-{f}", self.ops) for t, f in NB201_EDGES)

    def arch_type(self) -> type:
        return NB201Arch

    def _from_values(self, values: Sequence[Any]) -> NB201Arch:
        return NB201Arch(tuple(values))

    def _to_values(self, arch: NB201Arch) -> tuple[Any, ...]:
        return arch.ops

    def anchors(self) -> list[NB201Arch]:
        """The cell of every edge ``none`` (smallest) and of every edge the widest op this space allows (3x3 conv
        when present): the choice order (avg-pool last) is not the cost order here."""
        widest = next(op for op in ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none")
                      if op in self.ops)
        smallest = "none" if "none" in self.ops else self.ops[0]
        return [self._from_values([smallest] * len(NB201_EDGES)), self._from_values([widest] * len(NB201_EDGES))]

    def parse(self, s: str) -> NB201Arch:
        return self.validate(NB201Arch.from_str(s))

    def from_id(self, text: str) -> NB201Arch:
        """Inverse of :attr:`NB201Arch.id`, the benchmark's string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        try:
            return self.parse(str(text))
        except InvalidArchError as exc:
            raise self.id_error(text, str(exc)) from None

    def ordinal(self, arch: NB201Arch) -> int:
        """This project's base-``len(ops)`` index (edge 0 most significant); not NAS-Bench-201's order."""
        n = 0
        for i in self.encode(arch):
            n = n * len(self.ops) + int(i)
        return n

    def from_ordinal(self, n: int) -> NB201Arch:
        if not 0 <= n < self.cardinality():
            raise InvalidArchError(f"ordinal {n} out of range [0, {self.cardinality() - 1}]")
        digits = []
        for _ in range(6):
            n, d = divmod(n, len(self.ops))
            digits.append(d)
        return self.decode(digits[::-1])

    # -- concrete network -------------------------------------------------------------------------
    def input_shape(self, arch: NB201Arch) -> tuple[int, int, int]:
        return (self.in_chans, self.resolution, self.resolution)

    @staticmethod
    def _edge_layer(op: str, c: int, hw: int) -> list[LayerSpec]:
        """The layer of one edge op in one cell (``none`` has none)."""
        return {"none": [], "skip_connect": [LayerSpec("identity", hw, c, c)],
                "avg_pool_3x3": [LayerSpec("avg_pool_3x3", hw, c, c, kernel=3)],
                "nor_conv_1x1": [LayerSpec("relu_conv_bn", hw, c, c, kernel=1)],
                "nor_conv_3x3": [LayerSpec("relu_conv_bn", hw, c, c, kernel=3)]}[op]

    def _edge_layers(self, op: str) -> list[LayerSpec]:
        """The layers one edge op contributes over the whole network (one per cell)."""
        return [s for c, hw in self._stage_geometry() for s in self._edge_layer(op, c, hw) * self.N]

    def _reduction(self, stage: int) -> list[LayerSpec]:
        """The reduction block before ``stage``: conv_a (3x3 s2), conv_b (3x3), shortcut (2x2 pool + 1x1)."""
        (c, hw), (c2, _) = self._stage_geometry()[stage - 1: stage + 1]
        return [LayerSpec("relu_conv_bn", hw, c, c2, kernel=3, stride=2),
                LayerSpec("relu_conv_bn", conv_out(hw, 2), c2, c2, kernel=3),
                LayerSpec("pool_conv", hw, c, c2, kernel=1, stride=2)]

    def _stem_head(self) -> list[LayerSpec]:
        c, hw = self._stage_geometry()[-1]
        return [LayerSpec("conv_bn", self.resolution, self.in_chans, self.C, kernel=3),
                LayerSpec("bn_relu_head", hw, c, self.n_classes)]

    def layers(self, arch: NB201Arch) -> list[LayerSpec]:
        """In forward order: stem, each stage's cells (edge by edge, non-``none`` ops), reductions, head."""
        self.validate(arch)
        stem, head = self._stem_head()
        out = [stem]
        for stage, (c, hw) in enumerate(self._stage_geometry()):
            out += self._reduction(stage) if stage else []
            out += [s for _ in range(self.N) for op in arch.ops for s in self._edge_layer(op, c, hw)]
        return out + [head]

    def layer_table(self) -> LayerTable:
        """One fixed slot (stem, reductions, head) and one slot per edge, reading that edge's op."""
        ops = self.ops
        fixed = tuple(self._stem_head() + self._reduction(1) + self._reduction(2))
        slots = [TableSlot("fixed", (), (), (fixed,))]
        slots += [TableSlot.build(f"edge{j}", (j,), (len(ops),), lambda i: self._edge_layers(ops[i]))
                  for j in range(len(NB201_EDGES))]
        return LayerTable(tuple(slots))

    def quant_layout(self) -> QuantLayout:
        from search_spaces.quant_layouts import NB201Layout

        return NB201Layout(self)

    # -- cost model -------------------------------------------------------------------------------
    def _stage_geometry(self) -> list[tuple[int, int]]:
        hw = self.resolution
        out = []
        for stage in range(3):
            out.append((self.C * 2**stage, hw))
            hw = (hw + 1) // 2
        return out

    def macs(self, arch: NB201Arch) -> int:
        """MACs of convolutions and the classifier (what ``torch.utils.flop_counter`` counts / 2)."""
        self.validate(arch)
        C, r = self.C, self.resolution
        total = r * r * 9 * self.in_chans * C
        geo = self._stage_geometry()
        for stage, (c, hw) in enumerate(geo):
            per_cell = sum({"nor_conv_1x1": 1, "nor_conv_3x3": 9}.get(op, 0) * c * c * hw * hw for op in arch.ops)
            total += self.N * per_cell
            if stage < 2:
                c2, hw2 = geo[stage + 1]
                total += hw2 * hw2 * (9 * c * c2 + 9 * c2 * c2 + c * c2)
        return total + 4 * C * self.n_classes

    def params(self, arch: NB201Arch) -> int:
        self.validate(arch)
        C = self.C
        total = 9 * self.in_chans * C + 2 * C
        for stage in range(3):
            c = C * 2**stage
            total += self.N * sum({"nor_conv_1x1": c * c + 2 * c, "nor_conv_3x3": 9 * c * c + 2 * c}.get(op, 0)
                                  for op in arch.ops)
            if stage < 2:
                c2 = 2 * c
                total += 9 * c * c2 + 2 * c2 + 9 * c2 * c2 + 2 * c2 + c * c2
        return total + 2 * 4 * C + 4 * C * self.n_classes + self.n_classes


class NB201IndexMap:
    """NAS-Bench-201 index <-> architecture, read from a benchmark table (row i holds index i)."""

    def __init__(self, arch_strings: Sequence[str], space: NB201Space | None = None) -> None:
        self.space = space or NB201Space()
        self._archs = [self.space.parse(s) for s in arch_strings]
        self._index = {a: i for i, a in enumerate(self._archs)}
        if len(self._index) != len(self._archs):
            raise ValueError("benchmark table lists an architecture twice")

    @classmethod
    def from_csv(cls, path: str | Path, column: str = "ArchitectureString") -> NB201IndexMap:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise KeyError(f"{path} has no column {column!r}; columns: {reader.fieldnames}")
            return cls([row[column] for row in reader])

    def __len__(self) -> int:
        return len(self._archs)

    def arch(self, index: int) -> NB201Arch:
        if not 0 <= index < len(self._archs):
            raise IndexError(f"NAS-Bench-201 index {index} out of range [0, {len(self._archs) - 1}]")
        return self._archs[index]

    def index(self, arch: NB201Arch) -> int:
        try:
            return self._index[arch]
        except KeyError:
            raise InvalidArchError(f"{arch.id} is not in the benchmark table") from None


@SPACES.register("nb201")
def nb201(**kwargs: Any) -> NB201Space:
    """NAS-Bench-201 as benchmarked: C=16, N=5, CIFAR geometry."""
    return NB201Space(**kwargs)


@SPACES.register("nb201_tiny")
def nb201_tiny(**kwargs: Any) -> NB201Space:
    """C=8, N=1 on 28x28 grey-scale images, for tests and Fashion-MNIST."""
    defaults: dict[str, Any] = dict(C=8, N=1, in_chans=1, n_classes=10, resolution=28)
    defaults.update(kwargs)
    return NB201Space(name="nb201_tiny", **defaults)
