"""The search-space contract: a space is data (named choices); an architecture is a frozen, hashable value.

Everything that needs to enumerate, mutate or featurise architectures (pymoo problems, Optuna distributions,
predictors, samplers) goes through the gene view defined here, so a space is written down exactly once.
A space lists its *genes* (one tuple of choices each); ``encode`` maps an architecture to the integer index of
each gene's value, ``decode`` maps back and canonicalises, and ``active`` tells which genes matter for a given
architecture (a kernel of a block beyond its stage's depth does not).

Everything else the engine knows about a space lives on the space as small optional *capabilities* (the
:class:`typing.Protocol` classes below, optuna-style small interfaces): the priced layer list, the input shape, a
vectorised active mask, an additive layer table for pricing whole populations, a quantisation layout, a sorted
sub-model grid and parsing of canonical arch ids. A space implements the ones it supports; a consumer asks with
:func:`require`, which raises :class:`~search_spaces.errors.MissingCapabilityError` naming the space and the
capability. No table outside a
space is keyed by a space's class or name.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from search_spaces.errors import BadInputError, MissingCapabilityError
from search_spaces.registry import Registry

if TYPE_CHECKING:
    from search_spaces.layer_table import LayerTable
    from search_spaces.layers import LayerSpec
    from search_spaces.quant_layouts import QuantLayout
    from search_spaces.sorted import SortedGrid

__all__ = ["Gene", "SearchSpace", "InvalidArchError", "SPACES", "create_space", "as_generator", "CAPABILITIES",
           "Layered", "InputShaped", "VectorActive", "Tabulated", "QuantLayoutOwner", "SortedGridOwner", "IdParsing",
           "require", "has_capability"]


class InvalidArchError(BadInputError):
    """An architecture does not belong to a space; the message names the field, value and allowed values."""


@dataclass(frozen=True)
class Gene:
    """One decision of a space: a name and its ordered choices."""

    name: str
    choices: tuple[Any, ...]

    def index(self, value: Any) -> int:
        try:
            return self.choices.index(value)
        except ValueError:
            raise InvalidArchError(
                f"{self.name}={value!r} is not allowed; choose one of {list(self.choices)}"
            ) from None


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Accept a Generator or a seed; never fall back to global random state silently."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


class SearchSpace(abc.ABC):
    """Base class of all spaces. Subclasses are frozen dataclasses defining the four abstract methods."""

    name: str

    #: the registered supernet that serves this space by default (a wrapping supernet such as the quantised one
    #: builds it around the space when no base is named); ``None`` when the engine ships none
    supernet_name: ClassVar[str | None] = None

    # -- what a subclass defines ------------------------------------------------------------------
    @abc.abstractmethod
    def genes(self) -> tuple[Gene, ...]:
        """All decisions of the space in encoding order."""

    @abc.abstractmethod
    def _from_values(self, values: Sequence[Any]) -> Hashable:
        """Build the (canonical) architecture from one value per gene."""

    @abc.abstractmethod
    def _to_values(self, arch: Any) -> tuple[Any, ...]:
        """One value per gene; inactive genes may hold ``None``."""

    @abc.abstractmethod
    def arch_type(self) -> type:
        """The class of this space's architectures."""

    def active(self, arch: Any) -> np.ndarray:
        """Boolean mask over genes: which decisions change the network. Default: all."""
        return np.ones(len(self.genes()), dtype=bool)

    # -- generic machinery ------------------------------------------------------------------------
    def validate(self, arch: Any) -> Any:
        """Return ``arch`` if it belongs to the space, else raise :class:`InvalidArchError`."""
        if not isinstance(arch, self.arch_type()):
            raise InvalidArchError(
                f"expected a {self.arch_type().__name__} of space {self.name!r}, got {type(arch).__name__}"
            )
        values = self._to_values(arch)
        genes = self.genes()
        if len(values) != len(genes):
            raise InvalidArchError(f"architecture has {len(values)} genes, space {self.name!r} has {len(genes)}")
        mask = self.active(arch)
        for gene, value, on in zip(genes, values, mask):
            if on:
                gene.index(value)
        return arch

    def encode(self, arch: Any) -> np.ndarray:
        """Integer index of each gene's value (inactive genes encode as 0)."""
        self.validate(arch)
        mask = self.active(arch)
        return np.array(
            [g.index(v) if on else 0 for g, v, on in zip(self.genes(), self._to_values(arch), mask)],
            dtype=np.int64,
        )

    def encode_many(self, archs: Sequence[Any]) -> np.ndarray:
        return np.stack([self.encode(a) for a in archs]) if archs else np.zeros((0, len(self.genes())), int)

    def decode(self, x: Sequence[int] | np.ndarray) -> Any:
        genes = self.genes()
        x = np.asarray(x)
        if x.shape != (len(genes),):
            raise InvalidArchError(f"encoding must have shape ({len(genes)},), got {tuple(x.shape)}")
        values = []
        for g, i in zip(genes, x):
            i = int(round(float(i)))
            if not 0 <= i < len(g.choices):
                raise InvalidArchError(f"gene {g.name} index {i} out of range [0, {len(g.choices) - 1}]")
            values.append(g.choices[i])
        return self._from_values(values)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive integer bounds of the encoding (pymoo ``xl``/``xu``)."""
        hi = np.array([len(g.choices) - 1 for g in self.genes()], dtype=np.int64)
        return np.zeros_like(hi), hi

    def onehot(self, arch: Any) -> np.ndarray:
        """Concatenated one-hot of every gene, inactive genes all-zero (predictor features)."""
        idx, mask = self.encode(arch), self.active(arch)
        parts = []
        for g, i, on in zip(self.genes(), idx, mask):
            v = np.zeros(len(g.choices), dtype=np.float32)
            if on:
                v[i] = 1.0
            parts.append(v)
        return np.concatenate(parts)

    def onehot_many(self, archs: Sequence[Any]) -> np.ndarray:
        return np.stack([self.onehot(a) for a in archs])

    def sample(self, rng: np.random.Generator | int | None) -> Any:
        rng = as_generator(rng)
        return self._from_values([g.choices[rng.integers(len(g.choices))] for g in self.genes()])

    def mutate(self, arch: Any, rng: np.random.Generator | int | None, prob: float = 0.1) -> Any:
        """Resample each gene independently with probability ``prob``."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation prob must be in [0, 1], got {prob}")
        rng = as_generator(rng)
        x = self._full_indices(arch)
        for i, g in enumerate(self.genes()):
            if rng.random() < prob:
                x[i] = rng.integers(len(g.choices))
        return self.decode(x)

    def crossover(self, a: Any, b: Any, rng: np.random.Generator | int | None) -> Any:
        """Uniform crossover per gene."""
        rng = as_generator(rng)
        xa, xb = self._full_indices(a), self._full_indices(b)
        return self.decode(np.where(rng.random(len(xa)) < 0.5, xa, xb))

    def _full_indices(self, arch: Any) -> np.ndarray:
        return self.encode(arch)

    def cardinality(self) -> int:
        """Number of distinct networks (canonical architectures). Subclasses with inactive genes override."""
        n = 1
        for g in self.genes():
            n *= len(g.choices)
        return n

    def min_arch(self) -> Any:
        return self._from_values([g.choices[0] for g in self.genes()])

    def max_arch(self) -> Any:
        return self._from_values([g.choices[-1] for g in self.genes()])

    def anchors(self) -> list[Any]:
        """Corner architectures a searcher seeds its first population with (here the smallest and the largest):
        points a random start rarely draws in a large space, and the ends of an accuracy-cost front."""
        return [self.min_arch(), self.max_arch()]

    def arch_id(self, arch: Any) -> str:
        return str(self.validate(arch).id)

    def id_error(self, text: str, why: str) -> InvalidArchError:
        """The error a ``from_id`` raises: the string, this space, why, and a valid id to copy."""
        return InvalidArchError(f"{_short(text)!r} is not an arch id of space {self.name!r}: {why}; "
                                f"a valid id looks like {_short(self.arch_id(self.max_arch()))!r}")

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self, arch: Any) -> dict[str, Any]:
        return {"space": self.name, **self.validate(arch).to_dict()}

    def from_dict(self, d: dict[str, Any]) -> Any:
        d = dict(d)
        space = d.pop("space", self.name)
        if space != self.name:
            raise InvalidArchError(f"architecture belongs to space {space!r}, not {self.name!r}")
        try:
            arch = self.arch_type().from_dict(d)
        except (TypeError, KeyError) as exc:
            raise InvalidArchError(f"cannot read a {self.arch_type().__name__} from {d!r}: {exc}") from None
        return self.validate(arch)

    def to_json(self, arch: Any) -> str:
        return json.dumps(self.to_dict(arch), sort_keys=True)

    def from_json(self, s: str) -> Any:
        return self.from_dict(json.loads(s))

    def spec(self) -> dict[str, Any]:
        """Registered name and constructor fields: ``create_space(**spec)`` recreates the space."""
        if not dataclasses.is_dataclass(self):
            return {"name": self.name}
        # Only constructor fields: derived ``init=False`` fields (cached genes) are not arguments.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and f.name != "name"}
        return {"name": self.name, **fields}


def _short(text: Any, limit: int = 160) -> str:
    """``text`` itself, or its head and tail around an ellipsis when longer than ``limit`` (quantised ids are long)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 40]}...{text[-37:]}"


# -- capabilities ---------------------------------------------------------------------------------
@runtime_checkable
class Layered(Protocol):
    """``layers(arch)``: the concrete network as priced :class:`~search_spaces.layers.LayerSpec` values (stem,
    body and head; bit-widths in the signature for quantised spaces). Hardware profiles, MACs/params/bit-ops and
    the profiler read it; the exported module must have exactly these MACs and parameters."""

    def layers(self, arch: Any) -> list[LayerSpec]: ...


@runtime_checkable
class InputShaped(Protocol):
    """``input_shape(arch)``: ``(channels, height, width)`` of one input image of ``arch``."""

    def input_shape(self, arch: Any) -> tuple[int, int, int]: ...


@runtime_checkable
class VectorActive(Protocol):
    """``active_mask(X)``: ``space.active`` of every row of an encoding matrix at once (bool, same shape)."""

    def active_mask(self, X: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Tabulated(Protocol):
    """``layer_table()``: the layer list split into slots that each depend on a few genes, so a cost summed
    over layers is a sum of gathers over encodings (:class:`~search_spaces.layer_table.LayerTable`)."""

    def layer_table(self) -> LayerTable: ...


@runtime_checkable
class QuantLayoutOwner(Protocol):
    """``quant_layout()``: the quantisable conv/linear slots of the space's networks, in forward order."""

    def quant_layout(self) -> QuantLayout: ...


@runtime_checkable
class SortedGridOwner(Protocol):
    """``sorted_grid(dims=None, fixed=None)``: SortedNet's grid of nested sub-models of the space."""

    def sorted_grid(self, dims: Sequence[str] | None = None, fixed: Any = None) -> SortedGrid: ...


@runtime_checkable
class IdParsing(Protocol):
    """``from_id(text)``: the architecture whose canonical id (``arch.id``, what search prints) is ``text``; the
    exact inverse of ``arch_id``. A string that is no id of the space raises :class:`InvalidArchError` naming the
    string, the space and a valid id (:meth:`SearchSpace.id_error`)."""

    def from_id(self, text: str) -> Any: ...


#: capability name (also the method a space defines) -> its protocol
CAPABILITIES: dict[str, type] = {"layers": Layered, "input_shape": InputShaped, "active_mask": VectorActive,
                                 "layer_table": Tabulated, "quant_layout": QuantLayoutOwner,
                                 "sorted_grid": SortedGridOwner, "from_id": IdParsing}


def has_capability(space: object, capability: str) -> bool:
    """Whether ``space`` (or a supernet: ``gene_grad_norms``) implements the method named ``capability``."""
    return callable(getattr(space, capability, None))


def require(space: object, capability: str, *, needed_by: str = "") -> Any:
    """The bound method of ``capability`` on ``space``, or :class:`MissingCapabilityError` naming both."""
    if not has_capability(space, capability):
        raise MissingCapabilityError(space, capability, needed_by)
    return getattr(space, capability)


SPACES: Registry[SearchSpace] = Registry("search space")


def create_space(name: str, **kwargs: Any) -> SearchSpace:
    """Create a registered space by name (``create_space("ofa_mbv3", width_mult=1.2)``)."""
    return SPACES.create(name, **kwargs)
