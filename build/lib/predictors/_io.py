"""Saving fitted predictors without pickle: a JSON header plus a safetensors file of arrays.

``<stem>.json`` holds everything readable (format version, predictor name and hyper-parameters, the space spec,
scalar state, provenance and the SHA-256 of the arrays file); ``<stem>.safetensors`` holds the numeric arrays.
Loading parses JSON and safetensors only, so a predictor file cannot execute code. Both files are written to
temporary names and renamed, the arrays first, so a crash never leaves a header pointing at missing arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

__all__ = ["PredictorFormatError", "FORMAT", "FORMAT_VERSION", "stem_paths", "write_bundle", "read_bundle"]

FORMAT = "nas-engine-predictor"
FORMAT_VERSION = 1


class PredictorFormatError(ValueError):
    """A predictor file is missing, corrupt, of another format or of an unsupported version."""


def stem_paths(path: str | Path) -> tuple[Path, Path]:
    """``x``, ``x.json`` or ``x.safetensors`` -> (``x.json``, ``x.safetensors``)."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bundle(path: str | Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``header`` (JSON-able) and ``arrays``; returns the JSON path."""
    jpath, apath = stem_paths(path)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    _atomic(apath, lambda tmp: save_file(contiguous, tmp))
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **header,
            "arrays_file": apath.name, "arrays_sha256": _sha256(apath)}
    text = json.dumps(full, indent=1, sort_keys=True)
    _atomic(jpath, lambda tmp: Path(tmp).write_text(text))
    return jpath


def read_bundle(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a bundle written by :func:`write_bundle`."""
    jpath, _ = stem_paths(path)
    if not jpath.is_file():
        raise PredictorFormatError(f"no predictor header at {jpath}")
    try:
        header = json.loads(jpath.read_text())
    except json.JSONDecodeError as exc:
        raise PredictorFormatError(f"{jpath} is not valid JSON: {exc}") from None
    if header.get("format") != FORMAT:
        raise PredictorFormatError(f"{jpath} has format {header.get('format')!r}, expected {FORMAT!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise PredictorFormatError(
            f"{jpath} has format_version {header.get('format_version')!r}; this library reads {FORMAT_VERSION}")
    apath = jpath.with_name(header["arrays_file"])
    if not apath.is_file():
        raise PredictorFormatError(f"{jpath} refers to missing arrays file {apath}")
    if _sha256(apath) != header["arrays_sha256"]:
        raise PredictorFormatError(f"{apath} does not match the SHA-256 recorded in {jpath} (file changed or corrupt)")
    return header, load_file(str(apath))
