"""Hardware profiles: per-device latency tables, calibrated latency models, analytic costs and the LUT builder.

``create_hw_profile("snapdragon855")`` / ``("local_cpu", path=...)`` / ``("macs")`` return a
:class:`~hw_profiles.cost.CostModel` pricing architectures of any space with ``layers(arch)``. The builder
(:mod:`hw_profiles.builder`) imports torch lazily; nothing here imports torch at package import.
"""

from __future__ import annotations

from hw_profiles.cost import AnalyticCost, CostModel, CostReport, LayerCost
from hw_profiles.fallback import FitError, LinearCostModel, fit_linear_cost
from hw_profiles.features import FEATURE_NAMES, FeatureConfig, feature_matrix, layer_features
from hw_profiles.keys import KeyFormatError, parse_key
from hw_profiles.latency import LatencyModel, MissingEntryError, load_calibrated, save_calibrated
from hw_profiles.pricing import PRICERS, BatchCost, space_layer_specs
from hw_profiles.profile import Entry, HardwareProfile, ProfileFormatError, ProfileMeta, load_ofa_tables
from hw_profiles.registry import HW_PROFILES, create_hw_profile

__all__ = [
    "AnalyticCost", "BatchCost", "CostModel", "CostReport", "Entry", "FEATURE_NAMES", "FeatureConfig", "FitError",
    "HW_PROFILES", "HardwareProfile", "KeyFormatError", "LatencyModel", "LayerCost", "LinearCostModel",
    "MissingEntryError", "PRICERS", "ProfileFormatError", "ProfileMeta", "create_hw_profile", "feature_matrix",
    "fit_linear_cost", "layer_features", "load_calibrated", "load_ofa_tables", "parse_key", "save_calibrated",
    "space_layer_specs",
]
