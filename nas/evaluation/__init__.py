"""Measuring subnets of a trained supernet: BN-recalibrated accuracy of many architectures, measurement CSVs, and
loading any trained supernet (a user's included) from its weights directory or training checkpoint."""

from __future__ import annotations

from nas.evaluation.subnets import (
    MEASUREMENT_FIELDS,
    EvalSet,
    EvaluateResult,
    evaluate_arch,
    evaluate_subnets,
    read_measurements,
    run_evaluate,
    sample_archs,
    write_measurements,
)
from nas.resolve import load_trained_supernet

__all__ = ["MEASUREMENT_FIELDS", "EvalSet", "EvaluateResult", "evaluate_arch", "evaluate_subnets",
           "read_measurements", "run_evaluate", "sample_archs", "write_measurements", "load_trained_supernet"]
