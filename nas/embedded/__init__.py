"""Embedded defaults: a supernet this project trained on Fashion-MNIST and its measured subnet accuracies.

Each sub-directory ``nas/embedded/<name>/`` holds ``supernet.safetensors`` + ``supernet.json`` (weights and the
spec that rebuilds the supernet, see :func:`nas.train.load_supernet`), ``measurements.csv`` (BN-recalibrated top-1
and loss of seeded random subnets plus the smallest and largest, from ``python -m nas.evaluate``) and a README with
the exact commands that produced them. Everything works offline; nothing here is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.checkpoints import SPEC, WEIGHTS, load_supernet
from nas.evaluation import read_measurements
from supernets import Supernet

__all__ = ["DEFAULT", "QUANT_DEFAULT", "ROOT", "available", "path", "load", "load_default", "load_measurements"]

ROOT = Path(__file__).resolve().parent
DEFAULT = "ofa_mbv3_fmnist"
#: the quantised default: EQ-Net supernet over the same space x per-layer bit-widths
QUANT_DEFAULT = "quant_ofa_mbv3_fmnist"
MEASUREMENTS = "measurements.csv"


def available() -> list[str]:
    """Names of the embedded supernets shipped with the package."""
    return sorted(p.name for p in ROOT.iterdir() if (p / SPEC).is_file() and (p / WEIGHTS).is_file())


def path(name: str = DEFAULT) -> Path:
    d = ROOT / name
    if not (d / SPEC).is_file():
        raise KeyError(f"no embedded supernet {name!r}; available: {available()}")
    return d


def load_measurements(name: str = DEFAULT, space: Any | None = None) -> list[dict[str, Any]]:
    """Measurement rows (arch decoded when ``space`` is given): arch_id, arch, top1 (%), loss, macs, params."""
    return read_measurements(path(name) / MEASUREMENTS, space)


def load(name: str = DEFAULT) -> tuple[Supernet, list[dict[str, Any]]]:
    """The trained supernet (eval mode) and its measured subnets (archs decoded in the supernet's space)."""
    net = load_supernet(path(name)).eval()
    return net, load_measurements(name, net.space)


def load_default() -> tuple[Supernet, list[dict[str, Any]]]:
    """``load(DEFAULT)``: the Fashion-MNIST OFA-MBv3 supernet and its measurements."""
    return load(DEFAULT)
