"""Network-level calibration of a measured layer table: how layer sums map to whole-network time on this machine.

Layers timed alone and summed miss what a whole network adds or saves (cache state between layers, per-call and
allocator costs, the runtime's fusion). nn-Meter's answer is kernel detection on the device; here, as part of every
local profile, a few calibration networks that span the space (the smallest, middle and largest encodings plus seeded
random ones) are timed end to end and one of three maps is fitted from their layer sums to their measured times:

* ``scale``:   ``t = k * sum + c0``                (``c0`` = the runtime's per-call overhead, measured separately)
* ``affine``:  ``t = k * sum + b``                 (a fitted fixed per-network overhead ``b >= 0``)
* ``per_op``:  ``t = sum_op k_op * sum_op + c0``   (one scale per op type, shrunk towards the global ``k``)

The map is chosen by its leave-one-network-out relative error (a more complex map must beat a simpler one by 5 %
and half a percentage point to be chosen). The fit, its in-sample and held-out residuals and the conditions of
the measurement (runtime, threads, batch, clock, CPU model and frequency, load average) are stored in the profile
(``meta.calibration``); :class:`~hw_profiles.latency.LatencyModel` applies it when pricing.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from search_spaces.layers import LayerSpec

__all__ = ["NetworkCalibration", "CalibrationError", "fit_calibration", "calibration_archs", "machine_conditions",
           "KINDS"]

KINDS = ("scale", "affine", "per_op")
_SHRINK = 1e-4  # weight pulling each per-op scale towards the global scale (few networks, many op types)
_PREFER_SIMPLER = 0.95  # a more complex map must cut the held-out RMSPE to below 95 % of a simpler one's
_MIN_GAIN = 0.005  # ... and by half a percentage point (differences in the noise are not evidence)


class CalibrationError(ValueError):
    """A calibration cannot be fitted or read."""


@dataclass(frozen=True)
class NetworkCalibration:
    """A fitted map from per-layer table sums to whole-network time (see the module docstring)."""

    kind: str
    scale: float
    offset: float
    op_scales: Mapping[str, float] = field(default_factory=dict)
    residuals: tuple[float, ...] = ()
    heldout: Mapping[str, float] = field(default_factory=dict)
    conditions: Mapping[str, Any] = field(default_factory=dict)
    networks: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CalibrationError(f"calibration kind must be one of {list(KINDS)}, got {self.kind!r}")
        values = [self.scale, self.offset, *self.op_scales.values()]
        if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values):
            raise CalibrationError(f"calibration scale/offset/op_scales must be finite numbers, got {values}")
        if self.scale <= 0 or self.offset < 0 or any(v < 0 for v in self.op_scales.values()):
            raise CalibrationError(f"calibration needs scale > 0, offset >= 0, op scales >= 0; got scale="
                                   f"{self.scale}, offset={self.offset}, op_scales={dict(self.op_scales)}")

    def layer_scales(self, specs: Sequence[LayerSpec]) -> np.ndarray:
        """The multiplier of each layer's table value (per op type for ``per_op``, else the global scale)."""
        if self.kind != "per_op":
            return np.full(len(specs), self.scale)
        return np.array([self.op_scales.get(s.op, self.scale) for s in specs], dtype=float)

    def predict(self, op_sums: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Network times from per-op-type sums of table values (one mapping per network)."""
        return np.array([self.offset + sum(v * (self.op_scales.get(op, self.scale) if self.kind == "per_op"
                                                else self.scale) for op, v in s.items()) for s in op_sums])

    @property
    def rmspe(self) -> float:
        """Held-out (leave-one-network-out) RMSPE of the chosen map; in-sample when too few networks."""
        return float(self.heldout.get(self.kind, np.sqrt(np.mean(np.square(self.residuals))) if self.residuals
                                      else 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "offset": self.offset, "op_scales": dict(self.op_scales),
                "residuals": list(self.residuals), "heldout": dict(self.heldout),
                "conditions": dict(self.conditions), "networks": [dict(n) for n in self.networks]}

    @classmethod
    def from_dict(cls, d: Any) -> NetworkCalibration:
        if not isinstance(d, Mapping):
            raise CalibrationError(f"meta.calibration must be a mapping, got {type(d).__name__}")
        allowed = {"kind", "scale", "offset", "op_scales", "residuals", "heldout", "conditions", "networks"}
        unknown, missing = sorted(set(d) - allowed), sorted({"kind", "scale", "offset"} - set(d))
        if unknown or missing:
            raise CalibrationError(f"meta.calibration: unknown field(s) {unknown}, missing field(s) {missing}")
        try:
            return cls(kind=d["kind"], scale=float(d["scale"]), offset=float(d["offset"]),
                       op_scales={str(k): float(v) for k, v in dict(d.get("op_scales", {})).items()},
                       residuals=tuple(float(r) for r in d.get("residuals", ())),
                       heldout={str(k): float(v) for k, v in dict(d.get("heldout", {})).items()},
                       conditions=dict(d.get("conditions", {})), networks=tuple(d.get("networks", ())))
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"meta.calibration: {exc}") from None


def op_sums(layers: Sequence[LayerSpec], values: Sequence[float]) -> dict[str, float]:
    """Table values of one network summed per op type."""
    out: dict[str, float] = {}
    for spec, v in zip(layers, values):
        out[spec.op] = out.get(spec.op, 0.0) + float(v)
    return out


def _fit(kind: str, sums: list[dict[str, float]], measured: np.ndarray, overhead: float,
         ops: list[str]) -> tuple[float, float, dict[str, float]]:
    """(scale, offset, op_scales) minimising squared relative error of ``kind`` on these networks."""
    total = np.array([sum(s.values()) for s in sums])
    target = np.maximum(measured - overhead, 1e-9)
    k = float(np.exp(np.mean(np.log(np.maximum(target / total, 1e-9)))))
    if kind == "scale":
        return k, overhead, {}
    if kind == "affine":
        a = np.stack([total / measured, 1.0 / measured], axis=1)
        (k_aff, b), _ = nnls(a, np.ones(len(measured)))
        if k_aff <= 0:
            return k, overhead, {}
        return float(k_aff), float(b), {}
    a = np.array([[s.get(op, 0.0) / m for op in ops] for s, m in zip(sums, target)])
    reg = np.sqrt(_SHRINK) * np.eye(len(ops))  # rows pulling k_op towards k: sqrt(w) * k_op ~ sqrt(w) * k
    rhs = np.concatenate([np.ones(len(target)), np.sqrt(_SHRINK) * k * np.ones(len(ops))])
    coef, _ = nnls(np.vstack([a, reg]), rhs)
    return k, overhead, {op: float(c) for op, c in zip(ops, coef)}


def _predict(fit: tuple[float, float, dict[str, float]], sums: list[dict[str, float]]) -> np.ndarray:
    k, b, per_op = fit
    return np.array([b + sum(v * per_op.get(op, k) for op, v in s.items()) for s in sums])


def fit_calibration(sums: Sequence[Mapping[str, float]], measured: Sequence[float], *, overhead: float = 0.0,
                    kinds: Sequence[str] = KINDS, conditions: Mapping[str, Any] | None = None,
                    networks: Sequence[Mapping[str, Any]] = ()) -> NetworkCalibration:
    """Fit every candidate map of ``kinds`` and keep the one with the lowest leave-one-network-out RMSPE.

    ``sums``: per network, its table values summed per op type; ``measured``: its end-to-end time (same units);
    ``overhead``: the runtime's per-call cost that the table entries had subtracted.
    """
    sums = [dict(s) for s in sums]
    y = np.asarray(measured, dtype=float)
    if len(sums) != len(y) or len(y) < 1:
        raise CalibrationError(f"need >= 1 network with a sum and a time, got {len(sums)} sums, {len(y)} times")
    if np.any(~np.isfinite(y)) or np.any(y <= 0) or any(sum(s.values()) <= 0 for s in sums):
        raise CalibrationError("calibration times and sums must be positive and finite")
    bad = sorted(set(kinds) - set(KINDS))
    if bad or not kinds:
        raise CalibrationError(f"unknown calibration kind(s) {bad}; choose from {list(KINDS)}")
    ops = sorted({op for s in sums for op in s})
    heldout: dict[str, float] = {}
    if len(y) >= 3:
        for kind in kinds:
            rel = [(_predict(_fit(kind, sums[:i] + sums[i + 1:], np.delete(y, i), overhead, ops), [sums[i]])[0]
                    - y[i]) / y[i] for i in range(len(y))]
            heldout[kind] = float(np.sqrt(np.mean(np.square(rel))))
    chosen = kinds[0]
    for kind in kinds[1:]:  # in order of complexity: a later map must clearly beat the best simpler one
        if heldout and heldout[kind] < _PREFER_SIMPLER * heldout[chosen] - _MIN_GAIN:
            chosen = kind
    k, b, per_op = _fit(chosen, sums, y, overhead, ops)
    residuals = tuple(float(r) for r in (_predict((k, b, per_op), sums) - y) / y)
    return NetworkCalibration(kind=chosen, scale=k, offset=b, op_scales=per_op, residuals=residuals,
                              heldout=heldout, conditions=dict(conditions or {}), networks=tuple(networks))


def calibration_archs(space: Any, n: int, seed: Any) -> list[Any]:
    """``n`` architectures spanning ``space``: smallest, middle and largest encodings, then seeded random ones."""
    out: list[Any] = []
    if n <= 0:
        return out
    try:
        lo, hi = space.bounds()
        for x in (lo, (np.asarray(lo) + np.asarray(hi)) // 2, hi):
            arch = space.decode(x)
            if arch not in out:
                out.append(arch)
    except Exception:  # noqa: BLE001 - a space whose corner encodings are invalid still gets random networks
        out = []
    out = out[:n]
    rng = np.random.default_rng(seed)
    while len(out) < n:
        out.append(space.sample(rng))
    return out


def _cpu_mhz() -> float | None:
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").read_text()) / 1000.0
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def machine_conditions(**measure: Any) -> dict[str, Any]:
    """What a timing depended on: the given measurement settings plus CPU model, clock, cores, pinning, load."""
    from hw_profiles.builder import cpu_name  # builder imports this module

    try:
        affinity: list[int] | None = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {**measure, "cpu_model": cpu_name(), "cpu_mhz": _cpu_mhz(), "cpu_count": os.cpu_count(),
            "affinity": affinity, "loadavg": load, "host": platform.node() or None,
            "time": datetime.datetime.now().isoformat(timespec="seconds")}
