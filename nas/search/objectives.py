"""Objectives and constraints: named, vectorised functions of a batch of architectures.

Following DyNAS-T's split of measurements (accuracy from a predictor or a validation run; latency, MACs, params)
and the engine's conventions, every quantity a search optimises or bounds is a :class:`Metric`-like object: a name,
a function mapping a *list* of architectures to one value each, and whether it is ``expensive`` (a real evaluation
that costs a query: supernet accuracy, a benchmark look-up) or cheap (MACs, a latency table, a fitted predictor).
An :class:`Objective` adds a direction; a :class:`Constraint` adds bounds. Searchers only ever see these.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from nas.registry import Registry
from search_spaces.base import SearchSpace, has_capability
from search_spaces.errors import BadInputError, MissingCapabilityError

__all__ = [
    "Metric", "Objective", "Constraint", "ArchFunction", "Predictor", "OBJECTIVES", "create_objective",
    "macs_objective", "params_objective", "table_objective", "predictor_objective", "hw_objective", "read_table",
    "MissingArchError",
]

ArchFunction = Callable[[Sequence[Any]], np.ndarray]
EncodedFunction = Callable[[np.ndarray], np.ndarray]
DIRECTIONS = ("min", "max")


class MissingArchError(BadInputError, KeyError):
    """A table objective was asked for an architecture it has no row for."""

    def __str__(self) -> str:
        return str(self.args[0])


@runtime_checkable
class Metric(Protocol):
    """The measurement contract shared by objectives and constraints."""

    name: str
    expensive: bool

    def __call__(self, archs: Sequence[Any]) -> np.ndarray: ...


@runtime_checkable
class Predictor(Protocol):
    """scikit-learn-style regressor over architectures (``predictors/`` follow it)."""

    def predict(self, archs: Sequence[Any]) -> np.ndarray: ...


def _check_values(name: str, values: Any, n: int) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.shape != (n,):
        raise BadInputError(f"metric {name!r} returned {out.shape[0]} values for {n} architectures")
    if not np.all(np.isfinite(out)):
        raise BadInputError(f"metric {name!r} returned non-finite values {out[~np.isfinite(out)][:5].tolist()}")
    return out


@dataclass(frozen=True)
class Objective:
    """A quantity to minimise or maximise. ``fn`` maps a list of archs to an array (one value per arch)."""

    name: str
    fn: ArchFunction = field(repr=False)
    direction: str = "min"
    expensive: bool = False
    #: optional vectorised twin of ``fn`` on (canonical) encoding matrices, used by searchers for whole populations
    fn_x: EncodedFunction | None = field(default=None, repr=False, compare=False)
    #: the cost model behind a hardware objective (a latency profile), for the search's pricing report
    model: Any = field(default=None, repr=False, compare=False)
    #: optional line for the search summary (e.g. how many layers a latency fallback priced)
    note: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise BadInputError(f"objective {self.name!r}: direction must be one of {DIRECTIONS}, "
                                f"got {self.direction!r}")
        if not self.name:
            raise BadInputError("an objective needs a non-empty name")

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        return _check_values(self.name, self.fn(list(archs)), len(archs))

    @property
    def sign(self) -> float:
        """Multiplier turning the raw value into a quantity to minimise."""
        return 1.0 if self.direction == "min" else -1.0


@dataclass(frozen=True)
class Constraint:
    """``lower <= metric(arch) <= upper``; at least one bound. Violation is the distance outside the bounds."""

    name: str
    fn: ArchFunction = field(repr=False)
    upper: float | None = None
    lower: float | None = None
    expensive: bool = False
    fn_x: EncodedFunction | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.upper is None and self.lower is None:
            raise BadInputError(f"constraint {self.name!r} needs an upper and/or lower bound, got neither")
        if self.upper is not None and self.lower is not None and self.lower > self.upper:
            raise BadInputError(f"constraint {self.name!r}: lower <= upper must hold, got ({self.lower}, {self.upper})")

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        return _check_values(self.name, self.fn(list(archs)), len(archs))

    def violation(self, values: np.ndarray) -> np.ndarray:
        """pymoo convention: <= 0 is feasible."""
        v = np.asarray(values, dtype=np.float64)
        out = np.full(v.shape, -np.inf)
        if self.upper is not None:
            out = np.maximum(out, v - self.upper)
        if self.lower is not None:
            out = np.maximum(out, self.lower - v)
        return out

    def describe(self) -> str:
        lo = f"{self.lower} <= " if self.lower is not None else ""
        hi = f" <= {self.upper}" if self.upper is not None else ""
        return f"{lo}{self.name}{hi}"

    @classmethod
    def on(cls, objective: Objective, *, upper: float | None = None, lower: float | None = None) -> Constraint:
        """Bound a quantity that is also an objective; it is then computed once per architecture."""
        return cls(objective.name, objective.fn, upper=upper, lower=lower, expensive=objective.expensive,
                   fn_x=objective.fn_x)


# -- built-in objectives --------------------------------------------------------------------------------------
OBJECTIVES: Registry[Objective] = Registry("objective")


def _analytic_cost(space: SearchSpace, attr: str, scale: float, name: str) -> Objective:
    """An analytic cost: summed over ``space.layers`` by the one per-layer pricer (vectorised on encodings), or
    ``space.<attr>(arch)`` for a space that gives only the total."""
    if has_capability(space, "layers"):
        from hw_profiles import create_hw_profile

        model = create_hw_profile(attr)
        return Objective(name, lambda archs: model.evaluate_many(space, list(archs)).values * scale,
                         fn_x=lambda X: model.evaluate_encoded(space, X).values * scale)
    cost = getattr(space, attr, None)
    if not callable(cost):
        raise MissingCapabilityError(space, "layers", needed_by=f"the {attr} objective (or give the space {attr}())")
    return Objective(name, lambda archs: np.array([cost(a) * scale for a in archs], dtype=np.float64))


@OBJECTIVES.register("macs")
def macs_objective(space: SearchSpace, *, scale: float = 1e-6, name: str = "macs_M") -> Objective:
    """Analytic MACs of the space (millions by default); requires ``space.macs``."""
    return _analytic_cost(space, "macs", scale, name)


@OBJECTIVES.register("params")
def params_objective(space: SearchSpace, *, scale: float = 1e-6, name: str = "params_M") -> Objective:
    """Analytic parameter count (millions by default); requires ``space.params``."""
    return _analytic_cost(space, "params", scale, name)


@OBJECTIVES.register("table")
def table_objective(space: SearchSpace, *, table: Mapping[str, float] | str | Path, name: str = "accuracy",
                    direction: str = "max", expensive: bool = True, id_column: str = "arch_id",
                    value_column: str | None = None) -> Objective:
    """Look-up of measured values keyed by arch id: a dict, or a CSV path (``id_column``, ``value_column``)."""
    values = read_table(table, id_column=id_column, value_column=value_column or name) if not isinstance(
        table, Mapping) else dict(table)

    def look_up(archs: Sequence[Any]) -> np.ndarray:
        out = np.empty(len(archs))
        for i, a in enumerate(archs):
            key = space.arch_id(a)
            if key not in values:
                raise MissingArchError(f"objective {name!r} has no measurement for {key!r} ({len(values)} rows)")
            out[i] = values[key]
        return out

    return Objective(name, look_up, direction=direction, expensive=expensive)


@OBJECTIVES.register("predictor")
def predictor_objective(space: SearchSpace, *, predictor: Predictor, name: str = "accuracy",
                        direction: str = "max") -> Objective:
    """A fitted predictor's output (cheap): one batched ``predict`` call per population. A predictor that also
    has ``predict_encoded(X)`` (rows of ``space.encode``) is called on whole encoding matrices."""
    if not callable(getattr(predictor, "predict", None)):
        raise TypeError(f"predictor must have a predict(archs) method, got {type(predictor).__name__}")
    fast = getattr(predictor, "predict_encoded", None)
    return Objective(name, lambda archs: np.asarray(predictor.predict(list(archs)), dtype=np.float64).reshape(-1),
                     direction=direction, expensive=False,
                     fn_x=None if not callable(fast) else (lambda X: np.asarray(fast(X), np.float64).reshape(-1)))


@OBJECTIVES.register("hw")
def hw_objective(space: SearchSpace, *, profile: Any, name: str | None = None, **profile_kwargs: Any) -> Objective:
    """A hardware cost (latency on a device, or MACs/params/size) from ``hw_profiles``: ``profile`` is a
    registered profile name (``snapdragon855``, ``local_cpu``, ``macs``...) or a ``CostModel``. Cheap; whole
    populations are priced from their encodings in one call."""
    from hw_profiles import create_hw_profile

    model = create_hw_profile(profile, **profile_kwargs) if isinstance(profile, str) else profile
    return Objective(name or model.name, lambda archs: np.asarray(model(space, list(archs)), dtype=np.float64),
                     fn_x=lambda X: np.asarray(model.evaluate_encoded(space, X).values, dtype=np.float64),
                     note=getattr(model, "pricing_note", None))


def create_objective(kind: str, space: SearchSpace, **kwargs: Any) -> Objective:
    """Build a registered objective (``macs``, ``params``, ``table``, ``predictor``, ...) for ``space``."""
    return OBJECTIVES.create(kind, space=space, **kwargs)


def read_table(path: str | Path, *, id_column: str, value_column: str) -> dict[str, float]:
    """Read ``{arch id: value}`` from a CSV; repeated ids are averaged (re-measured subnets)."""
    sums: dict[str, list[float]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for col in (id_column, value_column):
            if col not in cols:
                raise KeyError(f"{path} has no column {col!r}; columns: {cols}")
        for row in reader:
            sums.setdefault(row[id_column], []).append(float(row[value_column]))
    return {k: float(np.mean(v)) for k, v in sums.items()}


# Quantisation-policy objectives (EQ-Net); importing registers model_size, avg_bits, bitops, supernet_accuracy
# wherever the registry is (at the end: that module imports this one's names).
from nas.search import objectives_quant as _objectives_quant  # noqa: E402,F401
