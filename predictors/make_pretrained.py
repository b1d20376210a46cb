"""Refit the shipped OFA-MBv3 ImageNet accuracy predictor from a DyNAS-T style CSV given by the user.

    python tools/make_pretrained.py --csv <measured OFA subnets, e.g. OFA's dev.csv with columns
                                               "Sub-network" and the ImageNet top-1>

The data is never copied into the package: only the fitted model's weights and a provenance note are written.

Writes ``predictors/pretrained/ofa_mbv3_imagenet.{json,safetensors}`` (fitted model + provenance; no data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from predictors.base import create_predictor
from predictors.datasets import read_ofa_accuracy_csv
from predictors.pretrained import PRETRAINED_DIR
from search_spaces import create_space

__all__ = ["fit_ofa_mbv3_imagenet"]


def fit_ofa_mbv3_imagenet(csv_path: str | Path, *, out: str | Path = PRETRAINED_DIR / "ofa_mbv3_imagenet",
                          predictor: str = "gp", **kwargs: Any) -> Path:
    """Fit ``predictor`` on every architecture of an OFA/DyNAS-T accuracy CSV and save it with provenance."""
    space = create_space("ofa_mbv3")
    archs, y, counts = read_ofa_accuracy_csv(csv_path, space)
    model = create_predictor(predictor, space=space, **kwargs).fit(archs, y)
    provenance = {
        "target": "ImageNet top-1 accuracy (%) on the full validation set after BN recalibration",
        "fitted_on": f"{len(archs)} distinct OFA-MobileNetV3 w1.0 subnets ({int(counts.sum())} measurements, "
                     "repeats averaged), all at resolution 224",
        "source": "DyNAS-T notebook data (IntelLabs/DyNAS-T, Apache-2.0), file dev.csv",
        "valid_range": f"resolution 224; measured top-1 {y.min():.2f}..{y.max():.2f}; other resolutions extrapolate "
                       "through the MACs features only",
        "command": "python tools/make_pretrained.py --csv <dev.csv>",
    }
    return model.save(out, provenance=provenance)
