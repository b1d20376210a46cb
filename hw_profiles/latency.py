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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hw_profiles.calibration import NetworkCalibration
from hw_profiles.cost import CostModel, CostReport
from hw_profiles.domain import Domain, UncoveredOpError
from hw_profiles.fallback import LinearCostModel, fit_linear_cost
from hw_profiles.features import FeatureConfig
from hw_profiles.opmodel import Fallback, NeighbourModel, OpFeatureModel, stored_fallback
from hw_profiles.pricing import BatchCost, LayerPrices, space_layer_specs
from hw_profiles.profile import Entry, HardwareProfile, ProfileFormatError, ProfileMeta, write_atomic
from search_spaces.errors import CorruptFileError
from search_spaces.layers import LayerSpec

__all__ = ["LatencyModel", "MissingEntryError", "ProfileSpaceError", "CALIBRATED_FORMAT", "save_calibrated",
           "load_calibrated", "load_calibrated_domain"]

CALIBRATED_FORMAT = "nas-engine/calibrated-latency"


class MissingEntryError(UncoveredOpError):
    """A layer is not in the table and the profile has no fallback model."""


class ProfileSpaceError(CorruptFileError):
    """A measured profile was built for another search space (exit code 3: a file for something else)."""


class LatencyModel(CostModel):
    """Per-layer latency: ``table`` entries where the key matches, else the ``fallback`` model.

    ``domain`` (see :mod:`hw_profiles.domain`) is where the fallback's numbers hold: a layer it prices outside the
    domain warns once per (op, field), or is refused with ``strict=True``; an op outside it is an error.
    """

    exact_source = "table"

    def __init__(self, meta: ProfileMeta, table: Mapping[str, Entry] | None = None,
                 fallback: Fallback | None = None, *, domain: Domain | None = None,
                 strict: bool = False, heldout: Mapping[int, float] | None = None) -> None:
        super().__init__()
        self.meta, self.table, self.fallback = meta, dict(table or {}), fallback
        self.domain, self.strict = domain, bool(strict)
        #: network input size -> held-out RMSPE of the fallback model there (leave-one-resolution-out validation)
        self.heldout = dict(heldout or {})
        self.name = f"latency@{meta.name}"
        self.units = meta.units
        #: network-level calibration of a measured profile (None: entries times ``meta.scale``)
        self.calibration = NetworkCalibration.from_dict(meta.calibration) if meta.calibration else None
        self.network_constant = float(self.calibration.offset if self.calibration else meta.network_overhead)
        #: architectures priced so far and the layers of them the fallback priced (search summaries report it)
        self.archs_priced = self.fallback_layers = 0

    @classmethod
    def from_profile(cls, profile: HardwareProfile, *, features: FeatureConfig | None = None,
                     fallback: Fallback | None = None, strict: bool = False) -> LatencyModel:
        """Use a measured profile; unless given, the fallback is fitted on the profile's own entries, and the
        domain is that of the entries."""
        specs = profile.specs()
        if fallback is None and features is None:
            fallback = stored_fallback(profile)  # validated on held-out sizes and widths by the builder
        if fallback is None and len(profile) >= 2:
            keys = sorted(specs)
            fallback = fit_linear_cost([specs[k] for k in keys], [profile.entries[k].value for k in keys],
                                       features=features)
        domain = Domain.of(specs.values(), batch=profile.meta.batch,
                           source=f"profile {profile.meta.name!r} measured for space {profile.meta.space!r}")
        return cls(profile.meta, profile.entries, fallback, domain=domain, strict=strict)

    def heldout_error(self, layers: Sequence[LayerSpec]) -> float | None:
        """Held-out error of the validation part the network falls in (its input size between validated sizes:
        the nearest one's), None outside the validated sizes or when nothing was validated."""
        if not self.heldout or not layers:
            return None
        r = layers[0].in_hw
        if not min(self.heldout) <= r <= max(self.heldout):
            return None
        return self.heldout[min(self.heldout, key=lambda v: abs(v - r))]

    def evaluate(self, space: Any, arch: Any) -> CostReport:
        report = super().evaluate(space, arch)
        return replace(report, heldout_error=self.heldout_error(space.layers(arch)))

    def coverage(self, space: Any) -> tuple[int, int]:
        """(layer signatures of ``space`` found in the measured table, layer signatures of ``space``)."""
        keys = {spec.key() for spec in space_layer_specs(space)}
        return sum(k in self.table for k in keys), len(keys)

    def check_space(self, space: Any) -> tuple[int, int]:
        """Refuse a measured table built for another space (its op signatures miss this space's layers).

        A calibrated model alone (no table) prices any layer by design and is not checked. Returns
        :meth:`coverage`."""
        if not self.table:
            return 0, 0
        found, total = self.coverage(space)
        built = self.meta.space
        if found == 0 or (built is not None and built != space.name and found < total):
            raise ProfileSpaceError(
                f"hardware profile {self.meta.name!r} was built for space {built!r}; it measured {found} of the "
                f"{total} layer signatures of space {space.name!r}, so the rest would be extrapolated. Build a "
                f"profile for this space: python -m nas.profile hw={self.meta.name} space.name={space.name} "
                "out=<new file>")
        return found, total

    def evaluate_many(self, space: Any, archs: Sequence[Any]) -> BatchCost:
        return self._count(space, super().evaluate_many(space, archs))

    def evaluate_encoded(self, space: Any, x: np.ndarray) -> BatchCost:
        return self._count(space, super().evaluate_encoded(space, x))

    def _count(self, space: Any, batch: BatchCost) -> BatchCost:
        self.archs_priced += len(batch)
        self.fallback_layers += int(batch.n_modelled.sum())
        return batch

    def pricing_note(self) -> str:
        """One line for a search summary: how many layers of the priced architectures the fallback priced."""
        if not self.archs_priced:
            return f"{self.name}: nothing priced"
        if not self.fallback_layers:
            return f"{self.name}: every layer of {self.archs_priced} architectures priced from measured entries"
        kind = ("neighbour-corrected op-feature" if isinstance(self.fallback, NeighbourModel) else
                "op-feature" if isinstance(self.fallback, OpFeatureModel) else "linear")
        err = self.fallback.rel_error if self.fallback is not None else float("nan")
        return (f"{self.name}: {self.fallback_layers} layers of {self.archs_priced} architectures priced by the "
                f"{kind} fallback (not measured; held-out error {100 * err:.0f}%)")

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
            if self.domain is not None:
                self.domain.check([specs[i] for i in missing], strict=self.strict, what=self.name)
            if self.fallback is None:
                raise MissingEntryError(
                    f"{len(missing)} layer(s) not in profile {self.meta.name!r} and it has no fallback model "
                    f"(fewer than 2 entries), e.g. {specs[missing[0]].key()!r}; measure them with "
                    "`python -m nas.profile`"
                )
            pred = self.fallback.predict([specs[i] for i in missing])
            value[missing], model_error[missing], modelled[missing] = pred, pred * self.fallback.rel_error, True
        # network-level calibration: per-layer (per-op) scales; old profiles: one in-network / isolated ratio
        k = self.calibration.layer_scales(specs) if self.calibration else self.meta.scale
        return LayerPrices(value * k, sem2 * k * k, model_error * k, modelled)


def save_calibrated(path: str | Path, meta: ProfileMeta, model: LinearCostModel,
                    validation: Mapping[str, Any] | None = None, domain: Domain | None = None) -> Path:
    """Write a calibrated latency model (coefficients, provenance, measured error, domain) as JSON, atomically."""
    doc = {"format": CALIBRATED_FORMAT, "version": 1, "meta": meta.to_dict(), "model": model.to_dict(),
           "validation": dict(validation or {})}
    if domain is not None:
        doc["domain"] = domain.to_dict()
    return write_atomic(path, json.dumps(doc, indent=1))


def load_calibrated(path: str | Path) -> tuple[ProfileMeta, LinearCostModel, dict[str, Any]]:
    """Read :func:`save_calibrated` output: (meta, model, validation)."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("format") != CALIBRATED_FORMAT:
        raise ProfileFormatError(f"{path}: not a {CALIBRATED_FORMAT!r} file")
    unknown = sorted(set(doc) - {"format", "version", "meta", "model", "validation", "domain"})
    if unknown or doc.get("version") != 1:
        raise ProfileFormatError(f"{path}: unknown fields {unknown} or unsupported version {doc.get('version')!r}")
    try:
        model = LinearCostModel.from_dict(doc["model"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ProfileFormatError(f"{path}: bad model: {exc}") from None
    return ProfileMeta.from_dict(doc["meta"]), model, dict(doc.get("validation", {}))


def load_calibrated_domain(path: str | Path) -> Domain | None:
    """The domain stored with a calibrated model (None for files written before domains were recorded)."""
    doc = json.loads(Path(path).read_text())
    try:
        return Domain.from_dict(doc["domain"]) if "domain" in doc else None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProfileFormatError(f"{path}: bad domain: {exc}") from None

