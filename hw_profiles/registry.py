"""The ``HW_PROFILES`` registry: every objective a search can name, created by name (``hw=snapdragon855``).

Latency profiles (``snapdragon855``: shipped calibrated model; ``local_cpu`` / ``lut``: tables built by
``python -m nas.profile``; ``local_cpu_int8``: quantised spaces timed in ONNX Runtime's int8 kernels)
and analytic objectives (``macs``, ``flops``, ``params``, ``size``) share the
:class:`~hw_profiles.cost.CostModel` interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hw_profiles.cost import CostModel, bitops_cost, flops_cost, macs_cost, params_cost, size_cost
from hw_profiles.latency import LatencyModel, load_calibrated, load_calibrated_domain
from hw_profiles.ort_quant import local_cpu_int8
from hw_profiles.profile import HardwareProfile, load_ofa_tables
from search_spaces.errors import MissingFileError
from search_spaces.registry import Registry

__all__ = ["HW_PROFILES", "create_hw_profile", "SNAPDRAGON855_MODEL", "DEFAULT_LOCAL_PROFILE"]

HW_PROFILES: Registry[CostModel] = Registry("hardware profile")
SNAPDRAGON855_MODEL = Path(__file__).resolve().parent / "data" / "snapdragon855.json"
DEFAULT_LOCAL_PROFILE = Path("outputs") / "profiles" / "local_cpu_torch.json"


@HW_PROFILES.register("snapdragon855")
def snapdragon855(tables: str | Path | Iterable[str | Path] | None = None, *, strict: bool = False) -> LatencyModel:
    """Samsung Galaxy Note10 (Snapdragon 855) latency: the shipped calibrated model, fitted on OFA's Note10
    tables; with ``tables`` (a directory of OFA ``{r}_lookup_table.yaml`` files, or a list of them) the exact
    per-layer values are used wherever a key matches. Layers outside the fitted domain (OFA-MBv3 w1.2 at
    160-224 px, 3-channel input, fp32) warn, or are refused with ``strict=True``."""
    meta, model, validation = load_calibrated(SNAPDRAGON855_MODEL)
    heldout = {int(r): float(v["all_rmspe"]) for r, v in validation.get("per_resolution", {}).items()}
    return LatencyModel(meta, load_ofa_tables(tables) if tables is not None else None, model,
                        domain=load_calibrated_domain(SNAPDRAGON855_MODEL), strict=strict, heldout=heldout)


def _from_file(path: str | Path, hint: str, strict: bool) -> LatencyModel:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no hardware profile at {path}; {hint}")
    return LatencyModel.from_profile(HardwareProfile.load(path), strict=strict)


@HW_PROFILES.register("local_cpu")
def local_cpu(path: str | Path = DEFAULT_LOCAL_PROFILE, *, strict: bool = False) -> LatencyModel:
    """This machine's CPU, from a profile built by ``python -m nas.profile hw=local_cpu``."""
    return _from_file(path, "build it with `python -m nas.profile hw=local_cpu`", strict)


HW_PROFILES.add("local_cpu_int8", local_cpu_int8)  # quantised spaces in ONNX Runtime int8 (hw_profiles/ort_quant.py)


@HW_PROFILES.register("lut")
def lut(path: str | Path, *, strict: bool = False) -> LatencyModel:
    """Any profile file (JSON/YAML in this engine's format)."""
    return _from_file(path, "pass the path of a profile written by `python -m nas.profile`", strict)


@HW_PROFILES.register("macs")
def macs() -> CostModel:
    """Multiply-accumulates (what ``torch.utils.flop_counter`` counts, halved)."""
    return macs_cost()


@HW_PROFILES.register("flops")
def flops() -> CostModel:
    """Floating-point operations, 2 x MACs."""
    return flops_cost()


@HW_PROFILES.register("params")
def params() -> CostModel:
    """Trainable parameters of the static network."""
    return params_cost()


@HW_PROFILES.register("bitops")
def bitops() -> CostModel:
    """MACs x weight bits x activation bits (quantised spaces: each conv's own bits; float layers 32 x 32)."""
    return bitops_cost()


@HW_PROFILES.register("size")
def size() -> CostModel:
    """Weight storage in MB at each layer's bit-width."""
    return size_cost()


def create_hw_profile(name: str, **kwargs: Any) -> CostModel:
    """``create_hw_profile("snapdragon855")``, ``create_hw_profile("local_cpu", path=...)``, ``("macs")``..."""
    return HW_PROFILES.create(name, **kwargs)
