"""Latency of architectures on a device: measured per-operator table first, calibrated model for the rest.

This is OFA's lookup-table latency predictor (``MBv3LatencyTable``: the sum of per-layer table means, stem and head
included) made total: a layer missing from the table is priced by a :class:`~hw_profiles.fallback.LinearCostModel`
(fitted on the table's own entries, or shipped pre-fitted for a device such as ``snapdragon855``), reported as
extrapolated, with its cross-validated relative error as the error estimate. A model without a fallback refuses
missing layers rather than pricing them at 0 ms (nn-Meter's silent zero for unknown kernels is the bug avoided).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hw_profiles.cost import CostModel
from hw_profiles.fallback import LinearCostModel, fit_linear_cost
from hw_profiles.features import FeatureConfig
from hw_profiles.pricing import LayerPrices
from hw_profiles.profile import Entry, HardwareProfile, ProfileFormatError, ProfileMeta, write_atomic
from search_spaces.layers import LayerSpec

__all__ = ["LatencyModel", "MissingEntryError", "CALIBRATED_FORMAT", "save_calibrated", "load_calibrated"]

CALIBRATED_FORMAT = "nas-engine/calibrated-latency"


class MissingEntryError(KeyError):
    """A layer is not in the table and the profile has no fallback model."""

    def __str__(self) -> str:
        return str(self.args[0])


class LatencyModel(CostModel):
    """Per-layer latency: ``table`` entries where the key matches, else the ``fallback`` model."""

    exact_source = "table"

    def __init__(self, meta: ProfileMeta, table: Mapping[str, Entry] | None = None,
                 fallback: LinearCostModel | None = None) -> None:
        super().__init__()
        self.meta, self.table, self.fallback = meta, dict(table or {}), fallback
        self.name = f"latency@{meta.name}"
        self.units = meta.units
        self.network_constant = float(meta.network_overhead)

    @classmethod
    def from_profile(cls, profile: HardwareProfile, *, features: FeatureConfig | None = None,
                     fallback: LinearCostModel | None = None) -> LatencyModel:
        """Use a measured profile; unless given, the fallback is fitted on the profile's own entries."""
        if fallback is None and len(profile) >= 2:
            specs = profile.specs()
            keys = sorted(specs)
            fallback = fit_linear_cost([specs[k] for k in keys], [profile.entries[k].value for k in keys],
                                       features=features)
        return cls(profile.meta, profile.entries, fallback)

    def _price(self, specs: Sequence[LayerSpec]) -> LayerPrices:
        n = len(specs)
        value, sem2, model_error, modelled = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
        missing = []
        for i, spec in enumerate(specs):
            entry = self.table.get(spec.key())
            if entry is None:
                missing.append(i)
            else:
                value[i], sem2[i] = entry.value, entry.sem**2
        if missing:
            if self.fallback is None:
                raise MissingEntryError(
                    f"{len(missing)} layer(s) not in profile {self.meta.name!r} and it has no fallback model "
                    f"(fewer than 2 entries), e.g. {specs[missing[0]].key()!r}; measure them with "
                    "`python -m nas.profile`"
                )
            pred = self.fallback.predict([specs[i] for i in missing])
            value[missing], model_error[missing], modelled[missing] = pred, pred * self.fallback.rel_error, True
        k = self.meta.scale  # in-network / isolated calibration of the whole table (1.0 when not calibrated)
        return LayerPrices(value * k, sem2 * k * k, model_error * k, modelled)


def save_calibrated(path: str | Path, meta: ProfileMeta, model: LinearCostModel,
                    validation: Mapping[str, Any] | None = None) -> Path:
    """Write a calibrated latency model (coefficients, provenance, measured error) as JSON, atomically."""
    doc = {"format": CALIBRATED_FORMAT, "version": 1, "meta": meta.to_dict(), "model": model.to_dict(),
           "validation": dict(validation or {})}
    return write_atomic(path, json.dumps(doc, indent=1))


def load_calibrated(path: str | Path) -> tuple[ProfileMeta, LinearCostModel, dict[str, Any]]:
    """Read :func:`save_calibrated` output: (meta, model, validation)."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("format") != CALIBRATED_FORMAT:
        raise ProfileFormatError(f"{path}: not a {CALIBRATED_FORMAT!r} file")
    unknown = sorted(set(doc) - {"format", "version", "meta", "model", "validation"})
    if unknown or doc.get("version") != 1:
        raise ProfileFormatError(f"{path}: unknown fields {unknown} or unsupported version {doc.get('version')!r}")
    try:
        model = LinearCostModel.from_dict(doc["model"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ProfileFormatError(f"{path}: bad model: {exc}") from None
    return ProfileMeta.from_dict(doc["meta"]), model, dict(doc.get("validation", {}))

