"""Quantisation policies and joint architecture x policy spaces (EQ-Net, Xu et al., ICCV 2023). No torch.

A :class:`QuantPolicy` gives every quantisable layer *slot* of a network (every conv / linear, in forward order, as
listed by the space's :class:`~search_spaces.quant_layouts.QuantLayout`) one :class:`LayerQuant`: weight and
activation bit-widths, weight granularity (per-tensor / per-channel) and symmetry, activation symmetry.
Activations are per-tensor only. Slots the architecture does not run (blocks beyond a stage's depth, NB201 edges
without a conv) hold ``None``, so equal networks are equal values. First and last layers are fixed at 8 bits.

:class:`JointSpace` composes any architecture space with a policy space: its values are :class:`JointArch`
``(arch, policy)``, its genes are the architecture's genes followed by the policy's (modes, then weight bits and
activation bits of every non-fixed slot), so encoding, sampling, mutation, crossover and the one-hot predictor
features come from :class:`~search_spaces.base.SearchSpace` unchanged. Granularity and symmetry are either one
global choice (``mode_scope="global"``, what EQ-Net searches) or one choice per layer (``"layer"``); training
samplers and searchers both draw them through the same genes, so they are sampled the same way in training and
evaluation (the reference code samples per layer in training but evaluates global settings).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from search_spaces.base import SPACES, Gene, InvalidArchError, SearchSpace, as_generator, create_space, require
from search_spaces.layers import LayerSpec, layer_conv_macs
from search_spaces.quant_layouts import QuantLayout, layout_for

__all__ = [
    "SUPPORTED_BITS", "GRANULARITIES", "MODE_SCOPES", "InvalidPolicyError", "LayerQuant", "QuantPolicy",
    "JointArch", "JointSpace", "create_joint_space",
]

SUPPORTED_BITS = tuple(range(2, 9))
GRANULARITIES = ("per_tensor", "per_channel")
MODE_SCOPES = ("global", "layer")
_MODE_FIELDS = ("w_granularity", "w_symmetric", "a_symmetric")


class InvalidPolicyError(InvalidArchError):
    """A quantisation policy is malformed or not allowed; the message names the layer, field and allowed values."""


def _check_bits(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in SUPPORTED_BITS:
        raise InvalidPolicyError(
            f"{name}={value!r} is not supported: bit-widths must be integers in "
            f"{SUPPORTED_BITS[0]}..{SUPPORTED_BITS[-1]} (one learned step/offset table entry per bit-width)"
        )
    return int(value)


@dataclass(frozen=True)
class LayerQuant:
    """How one conv/linear layer is quantised. Integer ranges: signed ``[-2^(b-1), 2^(b-1)-1]`` (unsigned
    ``[0, 2^b-1]`` for activations that are non-negative, e.g. after ReLU)."""

    w_bits: int
    a_bits: int
    w_granularity: str = "per_tensor"
    w_symmetric: bool = True
    a_symmetric: bool = True
    a_granularity: str = "per_tensor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "w_bits", _check_bits("w_bits", self.w_bits))
        object.__setattr__(self, "a_bits", _check_bits("a_bits", self.a_bits))
        if self.w_granularity not in GRANULARITIES:
            raise InvalidPolicyError(f"w_granularity={self.w_granularity!r}; choose one of {list(GRANULARITIES)}")
        if self.a_granularity != "per_tensor":
            raise InvalidPolicyError(
                f"a_granularity={self.a_granularity!r} is not supported: activations are quantised per tensor only "
                "(a per-channel activation scale cannot be factored out of an integer convolution); use 'per_tensor'"
            )
        for name in ("w_symmetric", "a_symmetric"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InvalidPolicyError(f"{name} must be a bool, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))

    @property
    def per_channel(self) -> bool:
        return self.w_granularity == "per_channel"

    @property
    def token(self) -> str:
        """Canonical short form, e.g. ``w4cs.a4a`` (per-channel symmetric 4-bit weights, asymmetric 4-bit acts)."""
        g = "c" if self.per_channel else "t"
        return f"w{self.w_bits}{g}{'s' if self.w_symmetric else 'a'}.a{self.a_bits}{'s' if self.a_symmetric else 'a'}"

    @classmethod
    def parse(cls, token: str) -> LayerQuant:
        try:
            w, a = token.split(".")
            if w[0] != "w" or a[0] != "a" or w[-2] not in "ct" or w[-1] not in "sa" or a[-1] not in "sa":
                raise ValueError
            w_bits, a_bits = int(w[1:-2]), int(a[1:-1])
        except (ValueError, IndexError):
            raise InvalidPolicyError(
                f"cannot parse layer token {token!r}; expected e.g. 'w4cs.a4a' (w<bits><t|c><s|a>.a<bits><s|a>)"
            ) from None
        return cls(w_bits, a_bits, "per_channel" if w[-2] == "c" else "per_tensor", w[-1] == "s", a[-1] == "s")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_any(cls, item: str | dict[str, Any] | LayerQuant) -> LayerQuant:
        if isinstance(item, LayerQuant):
            return item
        if isinstance(item, str):
            return cls.parse(item)
        if isinstance(item, dict):
            unknown = set(item) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise InvalidPolicyError(f"unknown layer fields {sorted(unknown)}; allowed: "
                                         f"{[f.name for f in dataclasses.fields(cls)]}")
            return cls(**item)
        raise InvalidPolicyError(f"a layer is a token string, a dict or a LayerQuant, got {type(item).__name__}")


@dataclass(frozen=True)
class QuantPolicy:
    """One :class:`LayerQuant` per slot of the layout; ``None`` for slots the architecture does not run."""

    layers: tuple[LayerQuant | None, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(None if q is None else LayerQuant.from_any(q) for q in self.layers))

    @property
    def id(self) -> str:
        return "-".join("x" if q is None else q.token for q in self.layers)

    def active_layers(self) -> list[LayerQuant]:
        return [q for q in self.layers if q is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [None if q is None else q.token for q in self.layers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantPolicy:
        if set(d) != {"layers"}:
            raise InvalidPolicyError(f"a policy dict has exactly one key 'layers', got {sorted(d)}")
        return cls(tuple(None if q is None else LayerQuant.from_any(q) for q in d["layers"]))

    @classmethod
    def uniform(cls, n_slots: int, w_bits: int, a_bits: int, **modes: Any) -> QuantPolicy:
        """Every slot the same (use :meth:`JointSpace.policy_for` to respect inactive and fixed slots)."""
        return cls(tuple(LayerQuant(w_bits, a_bits, **modes) for _ in range(n_slots)))


@dataclass(frozen=True)
class JointArch:
    """An architecture of the base space together with its quantisation policy."""

    arch: Any
    policy: QuantPolicy

    @property
    def id(self) -> str:
        return f"{self.arch.id}@{self.policy.id}"


@dataclass(frozen=True)
class JointSpace(SearchSpace):
    """``base`` x quantisation policies. With ``fixed_arch`` only the policy is searched (EQ-Net's setting)."""

    base: SearchSpace
    name: str = ""
    w_bits: tuple[int, ...] = SUPPORTED_BITS
    a_bits: tuple[int, ...] = SUPPORTED_BITS
    w_granularities: tuple[str, ...] = GRANULARITIES
    w_symmetries: tuple[bool, ...] = (True, False)
    a_symmetries: tuple[bool, ...] = (True, False)
    mode_scope: str = "global"
    fixed_bits: int = 8
    fixed_arch: Any = None
    layout: QuantLayout | None = field(default=None, compare=False)
    _genes: tuple[Gene, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"quant_{self.base.name}")
        for fname in ("w_bits", "a_bits"):
            bits = tuple(sorted({_check_bits(fname, b) for b in getattr(self, fname)}))
            object.__setattr__(self, fname, bits)
        object.__setattr__(self, "fixed_bits", _check_bits("fixed_bits", self.fixed_bits))
        for fname, allowed in (("w_granularities", GRANULARITIES), ("w_symmetries", (True, False)),
                               ("a_symmetries", (True, False))):
            values = tuple(getattr(self, fname))
            if not values or any(v not in allowed for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{fname}={values!r}: give distinct values from {list(allowed)}")
            object.__setattr__(self, fname, values)
        if self.mode_scope not in MODE_SCOPES:
            raise ValueError(f"mode_scope={self.mode_scope!r}; choose one of {list(MODE_SCOPES)}")
        if self.layout is None:
            object.__setattr__(self, "layout", layout_for(self.base))
        if self.fixed_arch is not None:
            object.__setattr__(self, "fixed_arch", self.base.validate(self.fixed_arch))
        object.__setattr__(self, "_genes", self._make_genes())

    # -- structure --------------------------------------------------------------------------------
    @property
    def slots(self) -> tuple[str, ...]:
        return self.lay.slots

    @property
    def lay(self) -> QuantLayout:
        assert self.layout is not None  # set in __post_init__
        return self.layout

    @property
    def fixed_slots(self) -> tuple[int, ...]:
        return self.lay.fixed_slots

    @property
    def in_chans(self) -> int:
        return self.base.in_chans  # type: ignore[attr-defined]

    @property
    def n_classes(self) -> int:
        return self.base.n_classes  # type: ignore[attr-defined]

    def input_shape(self, joint: JointArch) -> tuple[int, int, int]:
        return require(self.base, "input_shape", needed_by=f"joint space {self.name!r}")(joint.arch)

    def _free_slots(self) -> list[int]:
        return [i for i in range(len(self.slots)) if i not in self.fixed_slots]

    def _mode_choices(self) -> tuple[tuple[Any, ...], ...]:
        return self.w_granularities, self.w_symmetries, self.a_symmetries

    def _make_genes(self) -> tuple[Gene, ...]:
        genes = [] if self.fixed_arch is not None else list(self.base.genes())
        names = self.slots
        if self.mode_scope == "global":
            genes += [Gene(f, c) for f, c in zip(_MODE_FIELDS, self._mode_choices())]
        else:
            genes += [Gene(f"{f}:{s}", c) for s in names for f, c in zip(_MODE_FIELDS, self._mode_choices())]
        genes += [Gene(f"w_bits:{names[i]}", self.w_bits) for i in self._free_slots()]
        genes += [Gene(f"a_bits:{names[i]}", self.a_bits) for i in self._free_slots()]
        return tuple(genes)

    def _n_base(self) -> int:
        return 0 if self.fixed_arch is not None else len(self.base.genes())

    # -- SearchSpace ------------------------------------------------------------------------------
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

    def arch_type(self) -> type:
        return JointArch

    def _from_values(self, values: Sequence[Any]) -> JointArch:
        nb, n = self._n_base(), len(self.slots)
        arch = self.fixed_arch if self.fixed_arch is not None else self.base._from_values(values[:nb])
        rest = list(values[nb:])
        n_modes = 3 if self.mode_scope == "global" else 3 * n
        modes, rest = rest[:n_modes], rest[n_modes:]
        free = self._free_slots()
        wb = dict(zip(free, rest[: len(free)]))
        ab = dict(zip(free, rest[len(free):]))
        on = self.lay.active(arch)
        layers: list[LayerQuant | None] = []
        for i in range(n):
            if not on[i]:
                layers.append(None)
                continue
            m = modes if self.mode_scope == "global" else modes[3 * i : 3 * i + 3]
            w, a = (self.fixed_bits, self.fixed_bits) if i in self.fixed_slots else (wb[i], ab[i])
            layers.append(LayerQuant(w, a, m[0], m[1], m[2]))
        return JointArch(arch, QuantPolicy(tuple(layers)))

    def _to_values(self, joint: JointArch) -> tuple[Any, ...]:
        base = () if self.fixed_arch is not None else tuple(self.base._to_values(joint.arch))
        layers = joint.policy.layers
        if self.mode_scope == "global":
            first = next(q for q in layers if q is not None)
            modes: list[Any] = [getattr(first, f) for f in _MODE_FIELDS]
        else:
            modes = [None if q is None else getattr(q, f) for q in layers for f in _MODE_FIELDS]
        free = self._free_slots()
        wb = [None if layers[i] is None else layers[i].w_bits for i in free]  # type: ignore[union-attr]
        ab = [None if layers[i] is None else layers[i].a_bits for i in free]  # type: ignore[union-attr]
        return (*base, *modes, *wb, *ab)

    def active(self, joint: JointArch) -> np.ndarray:
        base = np.zeros(0, bool) if self.fixed_arch is not None else self.base.active(joint.arch)
        on = self.lay.active(joint.arch)
        modes = np.ones(3, bool) if self.mode_scope == "global" else np.repeat(on, 3)
        free = on[self._free_slots()]
        return np.concatenate([base, modes, free, free])

    def validate(self, joint: Any) -> JointArch:
        if not isinstance(joint, JointArch):
            raise InvalidArchError(f"expected a JointArch (arch, policy) of space {self.name!r}, "
                                   f"got {type(joint).__name__}")
        if self.fixed_arch is not None and joint.arch != self.fixed_arch:
            raise InvalidArchError(f"space {self.name!r} fixes the architecture to {self.fixed_arch.id}, "
                                   f"got {getattr(joint.arch, 'id', joint.arch)}")
        self.base.validate(joint.arch)
        self._validate_policy(joint)
        return super().validate(joint)

    def _validate_policy(self, joint: JointArch) -> None:
        layers, n = joint.policy.layers, len(self.slots)
        if len(layers) != n:
            raise InvalidPolicyError(f"policy has {len(layers)} layers, space {self.name!r} has {n} slots")
        on = self.lay.active(joint.arch)
        for i, (q, active) in enumerate(zip(layers, on)):
            if active != (q is not None):
                given = sum(q is not None for q in layers)
                raise InvalidPolicyError(
                    f"the policy does not fit architecture {joint.arch.id}: slot {i} ({self.slots[i]}) "
                    + ("runs in it but has no policy" if active else "does not run in it but has a policy")
                    + f"; the policy sets {given} slots, the architecture runs {int(on.sum())} (a policy written "
                    "for another architecture? slots that do not run hold None)")
            if q is not None and i in self.fixed_slots and (q.w_bits, q.a_bits) != (self.fixed_bits,) * 2:
                raise InvalidPolicyError(
                    f"slot {i} ({self.slots[i]}) is a first/last layer, fixed at W{self.fixed_bits}A{self.fixed_bits}; "
                    f"got W{q.w_bits}A{q.a_bits}"
                )
        if self.mode_scope == "global":
            modes = {tuple(getattr(q, f) for f in _MODE_FIELDS) for q in layers if q is not None}
            if len(modes) > 1:
                raise InvalidPolicyError(f"space {self.name!r} has one global granularity/symmetry "
                                         f"(mode_scope='global'), got {len(modes)} different settings")

    def cardinality(self) -> int:
        per_slot_modes = int(np.prod([len(c) for c in self._mode_choices()]))
        bits = len(self.w_bits) * len(self.a_bits)

        def factor(i: int) -> int:
            return (1 if i in self.fixed_slots else bits) * (per_slot_modes if self.mode_scope == "layer" else 1)

        glob = per_slot_modes if self.mode_scope == "global" else 1
        if self.fixed_arch is not None:
            on = self.lay.active(self.fixed_arch)
            return glob * int(np.prod([factor(i) for i in range(len(self.slots)) if on[i]], dtype=object))
        return glob * self.lay.cardinality(factor)

    # -- policies ---------------------------------------------------------------------------------
    def policy_for(self, arch: Any, w_bits: int, a_bits: int, *, w_granularity: str = "per_tensor",
                   w_symmetric: bool = True, a_symmetric: bool = True) -> JointArch:
        """``arch`` with every free slot at ``W{w_bits}A{a_bits}`` (first/last at ``fixed_bits``), validated."""
        on = self.lay.active(arch)
        layers = tuple(
            None if not on[i] else LayerQuant(
                *((self.fixed_bits,) * 2 if i in self.fixed_slots else (w_bits, a_bits)),
                w_granularity, w_symmetric, a_symmetric)
            for i in range(len(self.slots))
        )
        return self.validate(JointArch(arch, QuantPolicy(layers)))

    #: the modes int8 runtimes deploy (ONNX Runtime's QDQ: per-channel symmetric s8 weights, asymmetric u8
    #: activations; ``nas.export format=onnx_int8``)
    DEPLOY_MODES: ClassVar[dict[str, Any]] = {"w_granularity": "per_channel", "w_symmetric": True,
                                             "a_symmetric": False}

    def anchors(self) -> list[JointArch]:
        """The base space's anchors at every uniform bit-width ``W{b}A{b}``, in the default modes and (when the
        space allows them) the deployment modes :attr:`DEPLOY_MODES`: a per-layer random start almost never draws
        a policy with every layer at high bits, so without these a searched front misses its accurate end and the
        uniform policies a deployment would otherwise use."""
        base = [self.fixed_arch] if self.fixed_arch is not None else self.base.anchors()
        bits = sorted(set(self.w_bits) & set(self.a_bits))
        modes = [{}]
        if all(self.DEPLOY_MODES[f] in c for f, c in zip(_MODE_FIELDS, self._mode_choices())):
            modes.append(self.DEPLOY_MODES)
        return [self.policy_for(a, b, b, **m) for a in base for m in modes for b in bits]

    def with_bits(self, joint: JointArch, w_bits: int | Sequence[int], a_bits: int | Sequence[int]) -> JointArch:
        """Same architecture and modes, new bits for the free slots (a scalar or one value per free slot)."""
        free = self._free_slots()
        wb = [w_bits] * len(free) if isinstance(w_bits, (int, np.integer)) else list(w_bits)
        ab = [a_bits] * len(free) if isinstance(a_bits, (int, np.integer)) else list(a_bits)
        if len(wb) != len(free) or len(ab) != len(free):
            raise InvalidPolicyError(f"need one weight and one activation bit-width per free slot ({len(free)}), "
                                     f"got {len(wb)} and {len(ab)}")
        layers = list(joint.policy.layers)
        for i, w, a in zip(free, wb, ab):
            q = layers[i]
            if q is not None:
                layers[i] = dataclasses.replace(q, w_bits=w, a_bits=a)
        return self.validate(JointArch(joint.arch, QuantPolicy(tuple(layers))))

    def sample_modes(self, joint: JointArch, rng: np.random.Generator | int | None) -> JointArch:
        """Resample only the granularity/symmetry genes (EQ-Net samples them for the highest/lowest-bit subnet)."""
        rng = as_generator(rng)
        x = self.encode(joint)
        for i, g in enumerate(self.genes()):
            if g.name.split(":")[0] in _MODE_FIELDS:
                x[i] = rng.integers(len(g.choices))
        return self.decode(x)

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self, joint: JointArch) -> dict[str, Any]:
        self.validate(joint)
        return {"space": self.name, "arch": self.base.to_dict(joint.arch), "policy": joint.policy.to_dict()}

    def from_dict(self, d: dict[str, Any]) -> JointArch:
        d = dict(d)
        space = d.pop("space", self.name)
        if space != self.name:
            raise InvalidArchError(f"architecture belongs to space {space!r}, not {self.name!r}")
        if set(d) != {"arch", "policy"}:
            raise InvalidArchError(f"a joint architecture dict has keys 'arch' and 'policy', got {sorted(d)}")
        return self.validate(JointArch(self.base.from_dict(d["arch"]), QuantPolicy.from_dict(d["policy"])))

    def from_id(self, text: str) -> JointArch:
        """Inverse of :attr:`JointArch.id`: the base space's id, ``@``, then one token per layout slot joined by
        ``-`` (:attr:`LayerQuant.token` such as ``w4cs.a4a``, ``x`` for a slot the architecture does not run)."""
        base_id, at, policy_id = str(text).strip().rpartition("@")
        if not at:
            raise self.id_error(text, "a quantised arch id is <base arch id>@<one token per slot>")
        try:
            arch = require(self.base, "from_id", needed_by=f"parsing arch ids of {self.name!r}")(base_id)
            tokens = policy_id.split("-")
            policy = QuantPolicy(tuple(None if t == "x" else LayerQuant.parse(t) for t in tokens))
            return self.validate(JointArch(arch, policy))
        except InvalidArchError as exc:
            raise self.id_error(text, str(exc)) from None

    def spec(self) -> dict[str, Any]:
        if self.layout is not None and self.layout != layout_for(self.base):
            raise ValueError(f"space {self.name!r} uses a custom layout, which a spec cannot describe; "
                             "recreate it with create_joint_space(base, layout=...)")
        return {"name": "quant", "base": self.base.spec(), "space_name": self.name, "w_bits": list(self.w_bits),
                "a_bits": list(self.a_bits), "w_granularities": list(self.w_granularities),
                "w_symmetries": list(self.w_symmetries), "a_symmetries": list(self.a_symmetries),
                "mode_scope": self.mode_scope, "fixed_bits": self.fixed_bits,
                "fixed_arch": None if self.fixed_arch is None else self.base.to_dict(self.fixed_arch)}

    # -- costs ------------------------------------------------------------------------------------
    def layers(self, joint: JointArch) -> list[LayerSpec]:
        """The base network's layers with the policy's (weight, activation) bits of every conv/linear inside each
        layer in ``qbits`` (slots are in forward order, as the layers), and ``bits`` = its widest weight."""
        base = require(self.base, "layers", needed_by=f"pricing joint space {self.name!r}")(self.validate(joint).arch)
        quant = iter(joint.policy.active_layers())
        out = []
        for layer in base:
            q = tuple((p.w_bits, p.a_bits) for p in itertools.islice(quant, len(layer_conv_macs(layer))))
            if len(q) != len(layer_conv_macs(layer)):
                raise ValueError(f"space {self.name!r}: the quantisation layout has fewer slots than the base "
                                 f"network has convs/linears (ran out at {layer.key()})")
            out.append(dataclasses.replace(layer, bits=max(w for w, _ in q), qbits=q) if q else layer)
        if next(quant, None) is not None:
            raise ValueError(f"space {self.name!r}: the quantisation layout has more slots than the base network "
                             "has convs/linears")
        return out

    def macs(self, joint: JointArch) -> int:
        """MACs do not depend on bit-widths (see :meth:`bitops`, which does)."""
        return self.base.macs(self.validate(joint).arch)  # type: ignore[attr-defined]

    def bitops(self, joint: JointArch) -> int:
        """Sum over the layout's running slots of MACs x weight bits x activation bits (any layout; for the
        built-in ones it equals the ``bitops`` cost summed over :meth:`layers`)."""
        self.validate(joint)
        total = 0
        for c in self.lay.costs(joint.arch):
            q = joint.policy.layers[c.slot]
            assert q is not None  # costs list running slots only
            total += c.macs * q.w_bits * q.a_bits
        return int(total)

    def params(self, joint: JointArch) -> int:
        return self.base.params(self.validate(joint).arch)  # type: ignore[attr-defined]


def create_joint_space(base: SearchSpace | str | dict[str, Any], *, space_name: str = "",
                       fixed_arch: Any = None, layout: QuantLayout | None = None, **kwargs: Any) -> JointSpace:
    """Compose any architecture space (object, registered name or spec dict) with quantisation policies.

    ``fixed_arch`` (an architecture or its dict) fixes the architecture so only the policy is searched.
    """
    if isinstance(base, str):
        base = create_space(base)
    elif isinstance(base, dict):
        spec = dict(base)
        base = create_space(spec.pop("name"), **spec)
    if isinstance(fixed_arch, dict):
        fixed_arch = base.from_dict(fixed_arch)
    for key in ("w_granularities", "w_symmetries", "a_symmetries", "w_bits", "a_bits"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return JointSpace(base=base, name=space_name, fixed_arch=fixed_arch, layout=layout, **kwargs)


@SPACES.register("quant")
def quant(base: SearchSpace | str | dict[str, Any] = "nb201_tiny", **kwargs: Any) -> JointSpace:
    """Any space x quantisation policies (``base``: a space, registered name or spec; default ``nb201_tiny``)."""
    return create_joint_space(base, **kwargs)


def _register_builtin(name: str) -> None:
    def factory(**kwargs: Any) -> JointSpace:
        base_kwargs = kwargs.pop("base_kwargs", {})
        return create_joint_space(create_space(name, **base_kwargs), **kwargs)

    factory.__doc__ = f"The {name!r} space x quantisation policies (``base_kwargs`` go to the base space)."
    SPACES.add(f"quant_{name}", factory)


def _has_layout(name: str) -> bool:
    try:
        layout_for(create_space(name))
    except TypeError:
        return False
    return True


for _name in [n for n in SPACES.names() if not n.startswith("quant") and _has_layout(n)]:
    _register_builtin(_name)
