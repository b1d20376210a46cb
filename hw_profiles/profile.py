"""Hardware profiles as versioned data: device metadata plus per-operator measurements.

A profile follows OFA's latency lookup tables (Cai et al., ICLR 2020: one ``{count, mean, std}`` entry per operator
signature, see :mod:`hw_profiles.keys`) and adds what nn-Meter (Zhang et al., MobiSys 2021) records about a
predictor: the device, SoC, runtime and its version, threads, batch size, units and how the numbers were measured.
Files are JSON or YAML (chosen by suffix), read with a safe loader, validated on load, and written atomically.
OFA's own per-resolution table files are read by :func:`load_ofa_tables`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hw_profiles.keys import KeyFormatError, parse_key
from search_spaces.errors import CorruptFileError, MissingFileError
from search_spaces.layers import LayerSpec

__all__ = [
    "PROFILE_FORMAT", "PROFILE_VERSION", "UNITS", "ProfileFormatError", "Entry", "ProfileMeta", "HardwareProfile",
    "load_ofa_tables", "write_atomic",
]

PROFILE_FORMAT = "nas-engine/hw-profile"
PROFILE_VERSION = 1
UNITS = ("ms", "us", "s", "mJ")


class ProfileFormatError(CorruptFileError):
    """A profile file or dict is malformed; the message names the field, the value and what is allowed."""


def _check_keys(where: str, given: Mapping[str, Any], required: Iterable[str], optional: Iterable[str]) -> None:
    required, allowed = set(required), set(required) | set(optional)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ProfileFormatError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(given))
    if missing:
        raise ProfileFormatError(f"{where}: missing required field(s) {missing}")


@dataclass(frozen=True)
class Entry:
    """Measurements of one operator: ``mean`` (and optionally ``median``), ``std`` and ``count`` of timed runs."""

    mean: float
    std: float = 0.0
    count: int = 1
    median: float | None = None
    #: the kernel the signature actually ran as (e.g. ``int8`` for a quantised layer in ONNX Runtime); None: as named
    runs_as: str | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std") + (("median",) if self.median is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ProfileFormatError(f"entry {name} must be a finite number, got {value!r}")
        if self.mean <= 0 or (self.median is not None and self.median <= 0):
            raise ProfileFormatError(f"latency must be positive, got mean={self.mean!r} median={self.median!r}")
        if self.std < 0:
            raise ProfileFormatError(f"std must be >= 0, got {self.std!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ProfileFormatError(f"count must be an int >= 1, got {self.count!r}")
        if self.runs_as is not None and (not isinstance(self.runs_as, str) or not self.runs_as):
            raise ProfileFormatError(f"runs_as must be a non-empty string or absent, got {self.runs_as!r}")

    @property
    def value(self) -> float:
        """The robust centre used for pricing: the median when measured, else the mean (OFA tables)."""
        return self.median if self.median is not None else self.mean

    @property
    def sem(self) -> float:
        """Standard error of the centre."""
        return self.std / math.sqrt(self.count)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("median", "runs_as")}

    @classmethod
    def from_dict(cls, d: Any, where: str = "entry") -> Entry:
        if not isinstance(d, Mapping):
            raise ProfileFormatError(f"{where}: expected a mapping with mean/std/count, got {type(d).__name__}")
        _check_keys(where, d, ("mean",), ("std", "count", "median", "runs_as"))
        try:
            return cls(**d)
        except ProfileFormatError as exc:
            raise ProfileFormatError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class ProfileMeta:
    """Who measured what, where and how. ``None`` marks a field the source does not document."""

    name: str
    device: str
    soc: str | None
    runtime: str
    runtime_version: str | None
    threads: int | None
    batch: int
    units: str
    method: str
    created: str | None = None
    space: str | None = None
    host: str | None = None
    notes: str | None = None
    #: units the runtime adds once per network call (e.g. ONNX Runtime's session.run), subtracted from each entry
    network_overhead: float = 0.0
    #: multiplier of every entry when pricing networks (in-network / isolated ratio measured on whole networks)
    scale: float = 1.0
    #: median of the reference network when the profile was started; entries are drift-normalised to it (0 = off)
    reference_ms: float = 0.0
    #: network-level calibration (:class:`hw_profiles.calibration.NetworkCalibration` as a dict); replaces ``scale``
    calibration: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    _REQUIRED = ("name", "device", "soc", "runtime", "runtime_version", "threads", "batch", "units", "method")

    def __post_init__(self) -> None:
        for name in ("name", "device", "runtime", "method"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ProfileFormatError(f"meta.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.units not in UNITS:
            raise ProfileFormatError(f"meta.units must be one of {list(UNITS)}, got {self.units!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ProfileFormatError(f"meta.threads must be an int >= 1 or null (undocumented), got {self.threads!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ProfileFormatError(f"meta.batch must be an int >= 1, got {self.batch!r}")
        for name in ("network_overhead", "reference_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise ProfileFormatError(f"meta.{name} must be a number >= 0, got {value!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not (
                math.isfinite(self.scale) and self.scale > 0):
            raise ProfileFormatError(f"meta.scale must be a number > 0, got {self.scale!r}")
        if self.calibration is not None:
            from hw_profiles.calibration import CalibrationError, NetworkCalibration

            try:
                NetworkCalibration.from_dict(self.calibration)
            except CalibrationError as exc:
                raise ProfileFormatError(str(exc)) from None
        if not isinstance(self.provenance, dict):
            raise ProfileFormatError(f"meta.provenance must be a mapping, got {type(self.provenance).__name__}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d if self.calibration is not None else {k: v for k, v in d.items() if k != "calibration"}

    @classmethod
    def from_dict(cls, d: Any) -> ProfileMeta:
        if not isinstance(d, Mapping):
            raise ProfileFormatError(f"meta: expected a mapping, got {type(d).__name__}")
        optional = ("created", "space", "host", "notes", "network_overhead", "scale", "reference_ms", "calibration",
                    "provenance")
        _check_keys("meta", d, cls._REQUIRED, optional)
        return cls(**d)


@dataclass(frozen=True)
class HardwareProfile:
    """Metadata plus ``entries`` keyed by operator signature (``LayerSpec.key()``)."""

    meta: ProfileMeta
    entries: Mapping[str, Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        specs = {}
        for key in self.entries:
            try:
                specs[key] = parse_key(key)
            except KeyFormatError as exc:
                raise ProfileFormatError(f"entries: {exc}") from None
        object.__setattr__(self, "entries", dict(self.entries))
        object.__setattr__(self, "_specs", specs)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, spec_or_key: object) -> bool:
        key = spec_or_key.key() if isinstance(spec_or_key, LayerSpec) else spec_or_key
        return key in self.entries

    def specs(self) -> dict[str, LayerSpec]:
        """The parsed operator of every entry."""
        return dict(self._specs)  # type: ignore[attr-defined]

    def with_entries(self, entries: Mapping[str, Entry]) -> HardwareProfile:
        """A copy with ``entries`` added (replacing equal keys)."""
        return replace(self, entries={**self.entries, **entries})

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "meta": self.meta.to_dict(),
                "entries": {k: self.entries[k].to_dict() for k in sorted(self.entries)}}

    @classmethod
    def from_dict(cls, d: Any) -> HardwareProfile:
        if not isinstance(d, Mapping):
            raise ProfileFormatError(f"a profile must be a mapping, got {type(d).__name__}")
        _check_keys("profile", d, ("format", "version", "meta", "entries"), ())
        if d["format"] != PROFILE_FORMAT:
            raise ProfileFormatError(f"format must be {PROFILE_FORMAT!r}, got {d['format']!r}")
        if d["version"] != PROFILE_VERSION:
            raise ProfileFormatError(f"unsupported profile version {d['version']!r}; this code reads {PROFILE_VERSION}")
        if not isinstance(d["entries"], Mapping):
            raise ProfileFormatError(f"entries must be a mapping, got {type(d['entries']).__name__}")
        entries = {k: Entry.from_dict(v, f"entry {k!r}") for k, v in d["entries"].items()}
        return cls(ProfileMeta.from_dict(d["meta"]), entries)

    def save(self, path: str | Path) -> Path:
        """Write JSON (``.json``) or YAML (``.yaml``/``.yml``) atomically."""
        path = Path(path)
        if path.suffix == ".json":
            text = json.dumps(self.to_dict(), indent=1)
        elif path.suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        else:
            raise ProfileFormatError(f"profile files end in .json, .yaml or .yml, got {path.name!r}")
        return write_atomic(path, text)

    @classmethod
    def load(cls, path: str | Path) -> HardwareProfile:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"no hardware profile at {path}")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            kind = "JSON" if path.suffix == ".json" else "YAML"
            raise ProfileFormatError(f"{path}: not valid {kind}: {exc}") from None
        try:
            return cls.from_dict(data)
        except ProfileFormatError as exc:
            raise ProfileFormatError(f"{path}: {exc}") from None


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _table_files(source: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        source = Path(source)
        files = sorted(source.glob("*_lookup_table.yaml")) if source.is_dir() else [source]
    else:
        files = [Path(p) for p in source]
    if not files:
        raise MissingFileError(f"no OFA '<resolution>_lookup_table.yaml' files in {source}")
    return files


def load_ofa_tables(source: str | Path | Iterable[str | Path]) -> dict[str, Entry]:
    """Entries of OFA latency tables (a directory of ``{r}_lookup_table.yaml`` or a list of files).

    A key present in several tables (the 1x1 head layers do not depend on resolution) gets the count-weighted
    pooled mean and standard deviation of its measurements.
    """
    pooled: dict[str, list[tuple[int, float, float]]] = {}
    for path in _table_files(source):
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, Mapping):
            raise ProfileFormatError(
                f"{path}: an OFA table maps keys to {{count, mean, std}}, got {type(data).__name__}"
            )
        for key, value in data.items():
            entry = Entry.from_dict(value, f"{path}: entry {key!r}")
            try:
                parse_key(key)
            except KeyFormatError as exc:
                raise ProfileFormatError(f"{path}: {exc}") from None
            pooled.setdefault(key, []).append((entry.count, entry.mean, entry.std))
    out = {}
    for key, rows in pooled.items():
        n = sum(c for c, _, _ in rows)
        mean = sum(c * m for c, m, _ in rows) / n
        var = sum(c * (s * s + (m - mean) ** 2) for c, m, s in rows) / n
        out[key] = Entry(mean=mean, std=math.sqrt(var), count=n)
    return out
