"""Predictors shipped with the package, fitted by this project on published measurements.

``ofa_mbv3_imagenet``: measured ImageNet top-1 of OFA-MobileNetV3 (w1.0) subnets at resolution 224 (DyNAS-T's
result table, Apache-2.0). Only the fitted model (kernel hyper-parameters, the training features and GP weights)
is shipped, with a provenance note in its JSON header and in ``pretrained/README.md``; the data stays outside.
Regenerate with ``python tools/make_pretrained.py --csv <path to dev.csv>``.
"""

from __future__ import annotations

from pathlib import Path

from predictors.base import Predictor, load_predictor
from search_spaces import SearchSpace

__all__ = ["PRETRAINED_DIR", "available_pretrained", "load_pretrained"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def available_pretrained() -> list[str]:
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.json"))


def load_pretrained(name: str, *, space: SearchSpace | None = None) -> Predictor:
    """Load a shipped predictor by name (``load_pretrained("ofa_mbv3_imagenet")``)."""
    path = PRETRAINED_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no pretrained predictor {name!r}; available: {available_pretrained()}")
    return load_predictor(path, space=space)
