"""The fallback for blocks a table never measured: an op-feature model validated on held-out sizes and widths.

In the spirit of nn-Meter's per-kernel predictors, :class:`OpFeatureModel` prices a layer from its op features
(kernel, channels, spatial size, stride, SE/activation, op type) through the physical features of
:mod:`hw_profiles.features` (MACs per kernel kind, bytes moved, launches): a set of non-negative coefficients shared
by all ops plus one set per op type (so an op type's own cost per MAC or per byte can differ), fitted by
non-negative least squares on relative error (``scipy.optimize.nnls``). Optionally (``channel_terms``) two
per-channel overheads join the physical features: thousands of middle and of output channels. Measured here on
OFA-MBv3 torch tables (5 builds on the 2-core CPU), they carry the fixed per-channel work of eager kernels (bias and
activation passes, depthwise loops set up per channel, weight packing per output channel) that MACs and bytes miss;
held-out within +-10 % rose from 0.66-0.77 to 0.72-0.80. The fit is Huber-reweighted (a few iterations of
weighted NNLS on relative error), so the rare entry whose timing jumped to another kernel or cache regime does not
drag the coefficients every other layer is priced by.

:func:`heldout_validation` measures how it generalises where a table has no entry: every spatial input size (a
resolution's blocks) and every width (expand ratio, or output channels) is held out in turn, the model fitted on
the rest predicts it, and the pooled fraction within +-10 % and RMSPE are reported per axis.
:func:`fit_fallback` fits the shared-only :class:`~hw_profiles.fallback.LinearCostModel`, this model (with and
without per-channel terms) and :class:`NeighbourModel` (this model corrected by the residuals of the nearest measured
layers), keeps the simplest within 1 % of the lowest held-out RMSPE, and records the validation; the builder stores
it in the profile (``meta.provenance["fallback"]``) and :class:`~hw_profiles.latency.LatencyModel` prices unmeasured
layers with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import nnls

from hw_profiles.fallback import FitError, LinearCostModel, fit_linear_cost, relative_errors
from hw_profiles.features import FEATURE_NAMES, FeatureConfig, feature_matrix
from search_spaces.layers import LayerSpec

__all__ = ["OpFeatureModel", "NeighbourModel", "Fallback", "CHANNEL_FEATURE_NAMES", "op_features", "fit_op_model",
           "heldout_validation", "fallback_candidates",
           "fit_fallback", "fallback_from_dict",
           "width_of", "with_fallback", "stored_fallback"]


@dataclass(frozen=True)
class OpFeatureModel:
    """``latency = max(f @ (shared + per_op[op]), floor)``; ``rel_error``: held-out RMSPE (one sigma).

    ``f`` is :func:`op_features`: the physical features, plus the per-channel terms when ``channel_terms``."""

    shared: tuple[float, ...]
    per_op: dict[str, tuple[float, ...]]
    floor: float
    rel_error: float
    features: FeatureConfig = field(default_factory=FeatureConfig)
    info: dict[str, Any] = field(default_factory=dict)
    channel_terms: bool = False

    def __post_init__(self) -> None:
        n = len(self.feature_names())
        for name, coef in [("shared", self.shared), *self.per_op.items()]:
            if len(coef) != n or any(not np.isfinite(c) or c < 0 for c in coef):
                raise ValueError(f"coefficients {name!r} must be {n} finite values >= 0, got {coef}")
        if not (self.floor > 0 and self.rel_error >= 0):
            raise ValueError(f"floor must be > 0 and rel_error >= 0, got {self.floor}, {self.rel_error}")

    def feature_names(self) -> list[str]:
        return _feature_names(self.channel_terms)

    def predict(self, specs: Sequence[LayerSpec]) -> np.ndarray:
        if not specs:
            return np.zeros(0)
        a = op_features(specs, self.features, channel_terms=self.channel_terms)
        zero = (0.0,) * a.shape[1]
        coef = np.array([np.add(self.shared, self.per_op.get(s.op, zero)) for s in specs])
        return np.maximum((a * coef).sum(axis=1), self.floor)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "op_features", "feature_names": self.feature_names(), "channel_terms": self.channel_terms,
                "shared": list(self.shared), "per_op": {k: list(v) for k, v in self.per_op.items()},
                "floor": self.floor, "rel_error": self.rel_error, "features": self.features.to_dict(),
                "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpFeatureModel:
        channel_terms = bool(d.get("channel_terms", False))
        expected = _feature_names(channel_terms)
        if list(d.get("feature_names", ())) != expected:
            raise ValueError(f"model was fitted on features {d.get('feature_names')}, this code computes "
                             f"{expected}; refit it")
        return cls(shared=tuple(d["shared"]), per_op={k: tuple(v) for k, v in d["per_op"].items()},
                   floor=float(d["floor"]), rel_error=float(d["rel_error"]),
                   features=FeatureConfig(**d.get("features", {})), info=dict(d.get("info", {})),
                   channel_terms=channel_terms)


#: per-channel overheads appended to the physical features by ``channel_terms``: thousands of middle channels
#: (expand width of a block; 0 for single convolutions) and of output channels
CHANNEL_FEATURE_NAMES: tuple[str, ...] = ("mid_kch", "out_kch")


def _group(s: LayerSpec) -> str:
    """What a neighbour must share with the layer priced: op, kernel, stride, SE, activation, skip, bits."""
    return f"{s.op}|{s.kernel}|{s.stride}|{int(s.se)}|{s.act}|{int(s.skip)}|{s.bits}|{s.qbits}"


def _coords(specs: Sequence[LayerSpec]) -> np.ndarray:
    """Log spatial size, input, output and middle channels: the axes along which neighbours are near."""
    return np.log(np.array([[max(s.in_hw, 1), max(s.in_c, 1), max(s.out_c, 1), max(s.mid_c, 1)] for s in specs],
                           dtype=np.float64).reshape(len(specs), 4))


@dataclass(frozen=True)
class NeighbourModel:
    """An op-feature model corrected by the residuals of the measured layers most like the one priced.

    ``latency = base(x) * exp(sum_j w_j r_j / (sum_j w_j + lam))`` over the measured layers ``j`` of the same op,
    kernel, stride, SE, activation and bits, with ``r_j = log(measured_j / base_j)`` and ``w_j = exp(-d_j / tau)``,
    ``d_j`` the L1 distance in log spatial size and log channels. It is kriging with an exponential kernel on the
    op-feature model's residuals: what a block's own kernels cost beyond its MACs and bytes (a channel count the
    runtime tiles badly, a cache regime at one map size) is carried over from the same block measured at a
    neighbouring size or width; far from any measured neighbour, ``lam`` shrinks the correction to the base
    model. Measured on 5 stored OFA-MBv3 tables of the 2-core CPU, every spatial size and width held out in turn:
    ONNX Runtime within +-10 % rose from 0.73-0.79 to 0.92, torch from 0.73-0.82 to 0.77-0.82."""

    base: OpFeatureModel
    groups: tuple[str, ...]
    coords: tuple[tuple[float, ...], ...]
    residuals: tuple[float, ...]
    rel_error: float
    lam: float = 0.1
    tau: float = 0.2
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, specs: Sequence[LayerSpec], latencies: Sequence[float] | np.ndarray, *,
            features: FeatureConfig | None = None, lam: float = 0.1, tau: float = 0.2) -> NeighbourModel:
        y = np.asarray(latencies, dtype=float)
        base = fit_op_model(specs, y, features=features, channel_terms=True)
        res = np.log(y / base.predict(specs))
        return cls(base=base, groups=tuple(_group(s) for s in specs),
                   coords=tuple(tuple(float(v) for v in c) for c in _coords(specs)),
                   residuals=tuple(float(r) for r in res), rel_error=base.rel_error, lam=lam,
                   tau=tau, info={"n_fit": int(len(y))})

    def predict(self, specs: Sequence[LayerSpec]) -> np.ndarray:
        if not specs:
            return np.zeros(0)
        base = self.base.predict(specs)
        groups = np.array(self.groups)
        pts, res = np.array(self.coords).reshape(len(self.groups), 4), np.array(self.residuals)
        q, qg = _coords(specs), np.array([_group(s) for s in specs])
        corr = np.zeros(len(specs))
        for i in range(0, len(specs), 256):  # kernel-weighted mean residual of same-group entries (0 where none)
            w = np.exp(-np.abs(q[i:i + 256, None, :] - pts[None]).sum(axis=2) / self.tau)
            w *= qg[i:i + 256, None] == groups[None, :]
            corr[i:i + 256] = (w @ res) / (w.sum(axis=1) + self.lam)
        return base * np.exp(corr)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "neighbours", "base": self.base.to_dict(), "groups": list(self.groups),
                "coords": [list(c) for c in self.coords], "residuals": list(self.residuals),
                "rel_error": self.rel_error, "lam": self.lam, "tau": self.tau, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeighbourModel:
        n = len(d["groups"])
        if len(d["coords"]) != n or len(d["residuals"]) != n:
            raise ValueError(f"neighbour model: {n} groups, {len(d['coords'])} coords, {len(d['residuals'])} "
                             "residuals; they must match")
        return cls(base=OpFeatureModel.from_dict(d["base"]), groups=tuple(d["groups"]),
                   coords=tuple(tuple(float(v) for v in c) for c in d["coords"]),
                   residuals=tuple(float(r) for r in d["residuals"]), rel_error=float(d["rel_error"]),
                   lam=float(d.get("lam", 0.1)), tau=float(d.get("tau", 0.2)), info=dict(d.get("info", {})))


def _feature_names(channel_terms: bool) -> list[str]:
    return [*FEATURE_NAMES, *(CHANNEL_FEATURE_NAMES if channel_terms else ())]


def op_features(specs: Sequence[LayerSpec], config: FeatureConfig | None = None, *,
                channel_terms: bool = False) -> np.ndarray:
    """:func:`~hw_profiles.features.feature_matrix`, with the per-channel terms appended when ``channel_terms``."""
    a = feature_matrix(specs, config)
    if not channel_terms:
        return a
    ch = np.array([[s.mid_c * 1e-3, s.out_c * 1e-3] for s in specs], dtype=np.float64).reshape(len(specs), 2)
    return np.hstack([a, ch])


def _nnls_huber(d: np.ndarray, y: np.ndarray, iters: int) -> np.ndarray:
    """Non-negative coefficients minimising the Huber loss of relative error (iteratively reweighted NNLS; the
    threshold is 1.345 robust sigmas of the current residuals). ``iters=1`` is plain relative least squares."""
    w = np.ones(len(y))
    coef = np.zeros(d.shape[1])
    for _ in range(max(1, iters)):
        coef, _ = nnls(d / y[:, None] * w[:, None], w)
        r = np.abs(d @ coef / y - 1.0)
        c = 1.345 * 1.4826 * float(np.median(r)) + 1e-12
        w = np.sqrt(np.minimum(1.0, c / np.maximum(r, 1e-12)))
    return coef


def _design(a: np.ndarray, specs: Sequence[LayerSpec], ops: list[str]) -> np.ndarray:
    k = a.shape[1]
    out = np.zeros((len(specs), k * (len(ops) + 1)))
    out[:, :k] = a
    for i, s in enumerate(specs):
        j = ops.index(s.op) + 1
        out[i, j * k:(j + 1) * k] = a[i]
    return out


def fit_op_model(specs: Sequence[LayerSpec], latencies: Sequence[float] | np.ndarray, *,
                 features: FeatureConfig | None = None, rel_error: float | None = None,
                 channel_terms: bool = False, robust_iters: int = 5) -> OpFeatureModel:
    """Fit shared plus per-op-type coefficients on (layer, latency) pairs (relative error, coefficients >= 0;
    Huber-reweighted over ``robust_iters`` rounds, 1 = plain least squares)."""
    y = np.asarray(latencies, dtype=float)
    if len(specs) != len(y) or len(y) < 2 or np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise FitError(f"need >= 2 layers with positive, finite latencies, got {len(specs)} layers, {len(y)} values")
    cfg = features or FeatureConfig()
    ops = sorted({s.op for s in specs})
    a = op_features(specs, cfg, channel_terms=channel_terms)
    d = _design(a, specs, ops)
    coef = _nnls_huber(d, y, robust_iters)
    k = a.shape[1]
    floor = 0.5 * float(y.min())
    if rel_error is None:
        pred = np.maximum(d @ coef, floor)
        rel_error = float(np.sqrt(np.mean(relative_errors(pred, y) ** 2)))
    return OpFeatureModel(shared=tuple(float(c) for c in coef[:k]),
                          per_op={op: tuple(float(c) for c in coef[(j + 1) * k:(j + 2) * k])
                                  for j, op in enumerate(ops)},
                          floor=floor, rel_error=rel_error, features=cfg, info={"n_fit": int(len(y))},
                          channel_terms=channel_terms)


def width_of(spec: LayerSpec) -> Any:
    """The width a layer was built at: its expand ratio when it has a middle width, else its output channels."""
    if spec.mid_c and spec.in_c:
        return round(spec.mid_c / spec.in_c, 3)
    return spec.out_c


Fit = Callable[[Sequence[LayerSpec], np.ndarray], Any]
Fallback = LinearCostModel | OpFeatureModel | NeighbourModel


def heldout_validation(specs: Sequence[LayerSpec], latencies: Sequence[float] | np.ndarray, fit: Fit, *,
                       min_test: int = 3, truth: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """Hold out every spatial input size, then every width (:func:`width_of`), of the op with most entries; fit
    ``fit(train_specs, train_latencies)`` on the rest and predict the held-out entries, judged against ``truth``
    (default ``latencies``; e.g. the mean of repeated builds, to separate the model's error from the noise of the
    one measurement it is judged against).

    Returns per axis (``resolution``, ``width``) the pooled within10 / within5 / RMSPE, the per-value figures, and
    ``rmspe``/``within10`` pooled over both axes.
    """
    y = np.asarray(latencies, dtype=float)
    judge = y if truth is None else np.asarray(truth, dtype=float)
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
            rel = relative_errors(model.predict([s for s, t in zip(specs, test) if t]), judge[test])
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


def fallback_candidates(features: FeatureConfig | None = None) -> dict[str, Fit]:
    """The fallback kinds :func:`fit_fallback` chooses from, simplest first: name -> fit(specs, latencies)."""
    return {
        "linear": lambda s, t: fit_linear_cost(s, t, features=features, folds=1),
        "op_features": lambda s, t: fit_op_model(s, t, features=features),
        "op_channels": lambda s, t: fit_op_model(s, t, features=features, channel_terms=True),
        "neighbours": lambda s, t: NeighbourModel.fit(s, t, features=features),
    }


def fit_fallback(specs: Sequence[LayerSpec], latencies: Sequence[float] | np.ndarray, *,
                 features: FeatureConfig | None = None) -> tuple[Fallback, dict[str, Any]]:
    """The candidate models (shared-only linear; op features; op features with per-channel terms; the latter
    corrected by its nearest measured neighbours' residuals) validated by
    :func:`heldout_validation`; the simplest one whose held-out RMSPE is within 1 % + 0.001 of the lowest is
    refitted on everything, its ``rel_error`` the held-out RMSPE. Returns (model, validation of each candidate)."""
    y = np.asarray(latencies, dtype=float)
    candidates = fallback_candidates(features)
    checks = {name: heldout_validation(specs, y, fit) for name, fit in candidates.items()}
    scored = {name: c["rmspe"] for name, c in checks.items() if "rmspe" in c}
    chosen = "linear"
    if scored:  # the simplest candidate (dict order) within 1% + 0.001 of the best held-out RMSPE
        best = min(scored.values())
        chosen = next(name for name in candidates if name in scored and scored[name] <= best * 1.01 + 1e-3)
    model = candidates[chosen](specs, y)
    model = replace(model, rel_error=scored.get(chosen, model.rel_error),
                    info={**model.info, "heldout": checks[chosen]})
    return model, {"chosen": chosen, **checks}


def fallback_from_dict(d: dict[str, Any]) -> Fallback:
    """A stored fallback model of any kind."""
    if d.get("kind") == "op_features":
        return OpFeatureModel.from_dict(d)
    if d.get("kind") == "neighbours":
        return NeighbourModel.from_dict(d)
    return LinearCostModel.from_dict({k: v for k, v in d.items() if k != "kind"})


def with_fallback(profile: Any) -> Any:
    """``profile`` (a :class:`~hw_profiles.profile.HardwareProfile`) with its validated fallback stored in
    ``meta.provenance["fallback"]`` (model, chosen kind, held-out validation of every candidate)."""
    specs = profile.specs()
    if len(specs) < 2:
        return profile
    keys = sorted(specs)
    model, checks = fit_fallback([specs[k] for k in keys], [profile.entries[k].value for k in keys])
    doc = {"model": model.to_dict(), "n_entries": len(keys), "validation": checks}
    meta = replace(profile.meta, provenance={**profile.meta.provenance, "fallback": doc})
    return replace(profile, meta=meta)


def stored_fallback(profile: Any) -> Fallback | None:
    """The fallback stored by :func:`with_fallback`, None when absent or stale (entries added since)."""
    doc = profile.meta.provenance.get("fallback")
    if not isinstance(doc, dict) or doc.get("n_entries") != len(profile):
        return None
    try:
        return fallback_from_dict(doc["model"])
    except (KeyError, TypeError, ValueError):
        return None
