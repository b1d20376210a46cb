"""The fallback for blocks a table never measured: an op-feature model validated on held-out sizes and widths.

In the spirit of nn-Meter's per-kernel predictors, :class:`OpFeatureModel` prices a layer from its op features
(kernel, channels, spatial size, stride, SE/activation, op type) through the physical features of
:mod:`hw_profiles.features` (MACs per kernel kind, bytes moved, launches): a set of non-negative coefficients shared
by all ops plus one set per op type (so an op type's own cost per MAC or per byte can differ), fitted by
non-negative least squares on relative error (``scipy.optimize.nnls``).

:func:`heldout_validation` measures how it generalises where a table has no entry: every spatial input size (a
resolution's blocks) and every width (expand ratio, or output channels) is held out in turn, the model fitted on
the rest predicts it, and the pooled fraction within +-10 % and RMSPE are reported per axis.
:func:`fit_fallback` fits both this model and the shared-only :class:`~hw_profiles.fallback.LinearCostModel`, keeps
the one with the lower held-out RMSPE, and records the validation; the builder stores it in the profile
(``meta.provenance["fallback"]``) and :class:`~hw_profiles.latency.LatencyModel` prices unmeasured layers with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from hw_profiles.fallback import FitError, LinearCostModel, fit_linear_cost, relative_errors
from hw_profiles.features import FEATURE_NAMES, FeatureConfig, feature_matrix
from search_spaces.layers import LayerSpec

__all__ = ["OpFeatureModel", "fit_op_model", "heldout_validation", "fit_fallback", "fallback_from_dict",
           "width_of", "with_fallback", "stored_fallback"]


@dataclass(frozen=True)
class OpFeatureModel:
    """``latency = max(f @ (shared + per_op[op]), floor)``; ``rel_error``: held-out RMSPE (one sigma)."""

    shared: tuple[float, ...]
    per_op: dict[str, tuple[float, ...]]
    floor: float
    rel_error: float
    features: FeatureConfig = field(default_factory=FeatureConfig)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, coef in [("shared", self.shared), *self.per_op.items()]:
            if len(coef) != len(FEATURE_NAMES) or any(not np.isfinite(c) or c < 0 for c in coef):
                raise ValueError(f"coefficients {name!r} must be {len(FEATURE_NAMES)} finite values >= 0, got {coef}")
        if not (self.floor > 0 and self.rel_error >= 0):
            raise ValueError(f"floor must be > 0 and rel_error >= 0, got {self.floor}, {self.rel_error}")

    def predict(self, specs: Sequence[LayerSpec]) -> np.ndarray:
        if not specs:
            return np.zeros(0)
        a = feature_matrix(specs, self.features)
        zero = (0.0,) * len(FEATURE_NAMES)
        coef = np.array([np.add(self.shared, self.per_op.get(s.op, zero)) for s in specs])
        return np.maximum((a * coef).sum(axis=1), self.floor)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "op_features", "feature_names": list(FEATURE_NAMES), "shared": list(self.shared),
                "per_op": {k: list(v) for k, v in self.per_op.items()}, "floor": self.floor,
                "rel_error": self.rel_error, "features": self.features.to_dict(), "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpFeatureModel:
        if list(d.get("feature_names", ())) != list(FEATURE_NAMES):
            raise ValueError(f"model was fitted on features {d.get('feature_names')}, this code computes "
                             f"{list(FEATURE_NAMES)}; refit it")
        return cls(shared=tuple(d["shared"]), per_op={k: tuple(v) for k, v in d["per_op"].items()},
                   floor=float(d["floor"]), rel_error=float(d["rel_error"]),
                   features=FeatureConfig(**d.get("features", {})), info=dict(d.get("info", {})))


def _design(a: np.ndarray, specs: Sequence[LayerSpec], ops: list[str]) -> np.ndarray:
    k = a.shape[1]
    out = np.zeros((len(specs), k * (len(ops) + 1)))
    out[:, :k] = a
    for i, s in enumerate(specs):
        j = ops.index(s.op) + 1
        out[i, j * k:(j + 1) * k] = a[i]
    return out


def fit_op_model(specs: Sequence[LayerSpec], latencies: Sequence[float] | np.ndarray, *,
                 features: FeatureConfig | None = None, rel_error: float | None = None) -> OpFeatureModel:
    """Fit shared plus per-op-type coefficients on (layer, latency) pairs (relative least squares, >= 0)."""
    y = np.asarray(latencies, dtype=float)
    if len(specs) != len(y) or len(y) < 2 or np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise FitError(f"need >= 2 layers with positive, finite latencies, got {len(specs)} layers, {len(y)} values")
    cfg = features or FeatureConfig()
    ops = sorted({s.op for s in specs})
    d = _design(feature_matrix(specs, cfg), specs, ops)
    coef, _ = nnls(d / y[:, None], np.ones(len(y)))
    k = len(FEATURE_NAMES)
    floor = 0.5 * float(y.min())
    if rel_error is None:
        pred = np.maximum(d @ coef, floor)
        rel_error = float(np.sqrt(np.mean(relative_errors(pred, y) ** 2)))
    return OpFeatureModel(shared=tuple(float(c) for c in coef[:k]),
                          per_op={op: tuple(float(c) for c in coef[(j + 1) * k:(j + 2) * k])
                                  for j, op in enumerate(ops)},
                          floor=floor, rel_error=rel_error, features=cfg, info={"n_fit": int(len(y))})


def width_of(spec: LayerSpec) -> Any:
    """The width a layer was built at: its expand ratio when it has a middle width, else its output channels."""
    if spec.mid_c and spec.in_c:
        return round(spec.mid_c / spec.in_c, 3)
    return spec.out_c


Fit = Callable[[Sequence[LayerSpec], np.ndarray], Any]


def heldout_validation(specs: Sequence[LayerSpec], latencies: Sequence[float] | np.ndarray, fit: Fit, *,
                       min_test: int = 3) -> dict[str, Any]:
    """Hold out every spatial input size, then every width (:func:`width_of`), of the op with most entries; fit
    ``fit(train_specs, train_latencies)`` on the rest and predict the held-out entries.

    Returns per axis (``resolution``, ``width``) the pooled within10 / within5 / RMSPE, the per-value figures, and
    ``rmspe``/``within10`` pooled over both axes.
    """
    y = np.asarray(latencies, dtype=float)
    specs = list(specs)
    if not specs:
        return {}
    main = max({s.op for s in specs}, key=lambda op: sum(s.op == op for s in specs))
    out: dict[str, Any] = {"op": main}
    pooled = []
    for axis, value_of in (("resolution", lambda s: s.in_hw), ("width", width_of)):
        values = sorted({value_of(s) for s in specs if s.op == main})
        rels, per_value = [], {}
        for v in values if len(values) > 1 else []:
            test = np.array([s.op == main and value_of(s) == v for s in specs])
            if test.sum() < min_test or (~test).sum() < 2:
                continue
            model = fit([s for s, t in zip(specs, test) if not t], y[~test])
            rel = relative_errors(model.predict([s for s, t in zip(specs, test) if t]), y[test])
            rels.append(rel)
            per_value[str(v)] = {"n": int(test.sum()), "within10": float(np.mean(np.abs(rel) <= 0.1)),
                                 "rmspe": float(np.sqrt(np.mean(rel**2)))}
        if rels:
            rel = np.concatenate(rels)
            pooled.append(rel)
            out[axis] = {"n": int(len(rel)), "within10": float(np.mean(np.abs(rel) <= 0.1)),
                         "within5": float(np.mean(np.abs(rel) <= 0.05)), "rmspe": float(np.sqrt(np.mean(rel**2))),
                         "per_value": per_value}
    if pooled:
        rel = np.concatenate(pooled)
        out["within10"], out["rmspe"] = float(np.mean(np.abs(rel) <= 0.1)), float(np.sqrt(np.mean(rel**2)))
    return out


def fit_fallback(specs: Sequence[LayerSpec], latencies: Sequence[float] | np.ndarray, *,
                 features: FeatureConfig | None = None) -> tuple[LinearCostModel | OpFeatureModel, dict[str, Any]]:
    """Both candidate models validated by :func:`heldout_validation`; the one with the lower held-out RMSPE is
    refitted on everything, its ``rel_error`` the held-out RMSPE. Returns (model, validation of each candidate)."""
    y = np.asarray(latencies, dtype=float)
    candidates: dict[str, Fit] = {
        "linear": lambda s, t: fit_linear_cost(s, t, features=features, folds=1),
        "op_features": lambda s, t: fit_op_model(s, t, features=features),
    }
    checks = {name: heldout_validation(specs, y, fit) for name, fit in candidates.items()}
    scored = {name: c["rmspe"] for name, c in checks.items() if "rmspe" in c}
    chosen = min(scored, key=scored.__getitem__) if scored else "linear"
    model = candidates[chosen](specs, y)
    rel_error = scored.get(chosen, model.rel_error)
    if isinstance(model, LinearCostModel):
        model = LinearCostModel(coef=model.coef, floor=model.floor, rel_error=rel_error, features=model.features,
                                info={**model.info, "heldout": checks[chosen]})
    else:
        model = OpFeatureModel(shared=model.shared, per_op=model.per_op, floor=model.floor, rel_error=rel_error,
                               features=model.features, info={**model.info, "heldout": checks[chosen]})
    return model, {"chosen": chosen, **checks}


def fallback_from_dict(d: dict[str, Any]) -> LinearCostModel | OpFeatureModel:
    """A stored fallback model of either kind."""
    if d.get("kind") == "op_features":
        return OpFeatureModel.from_dict(d)
    return LinearCostModel.from_dict({k: v for k, v in d.items() if k != "kind"})


def with_fallback(profile: Any) -> Any:
    """``profile`` (a :class:`~hw_profiles.profile.HardwareProfile`) with its validated fallback stored in
    ``meta.provenance["fallback"]`` (model, chosen kind, held-out validation of both candidates)."""
    from dataclasses import replace

    specs = profile.specs()
    if len(specs) < 2:
        return profile
    keys = sorted(specs)
    model, checks = fit_fallback([specs[k] for k in keys], [profile.entries[k].value for k in keys])
    doc = {"model": model.to_dict(), "n_entries": len(keys), "validation": checks}
    meta = replace(profile.meta, provenance={**profile.meta.provenance, "fallback": doc})
    return replace(profile, meta=meta)


def stored_fallback(profile: Any) -> LinearCostModel | OpFeatureModel | None:
    """The fallback stored by :func:`with_fallback`, None when absent or stale (entries added since)."""
    doc = profile.meta.provenance.get("fallback")
    if not isinstance(doc, dict) or doc.get("n_entries") != len(profile):
        return None
    try:
        return fallback_from_dict(doc["model"])
    except (KeyError, TypeError, ValueError):
        return None
