"""Subnets on disk: a directory with ``config.json``, ``model.safetensors``, ``metadata.json`` (+ ``model.onnx``).

``save_subnet`` writes into a temporary sibling directory and renames it into place, so a crash never leaves a
half-written subnet; an existing non-empty target needs ``overwrite=True`` and must be a subnet directory the engine
wrote (only its files are replaced). ``load_subnet`` rebuilds the module from the config with :mod:`supernets.static`
only (no supernet code), verifies the SHA-256 of every file (weights, config, ONNX, and the metadata's own hash)
and loads tensors with safetensors (no code execution).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from search_spaces.errors import BadInputError, CorruptFileError
from supernets.static import build_from_config

__all__ = ["SubnetFormatError", "LoadedSubnet", "save_subnet", "load_subnet", "export_onnx", "file_sha256",
           "check_overwritable", "is_subnet_dir", "ENGINE_FILES"]

FORMAT_VERSION = 2  # 2: config, ONNX and metadata hashed too (1: weights only)


class SubnetFormatError(CorruptFileError):
    """A subnet directory is missing, incomplete, truncated or tampered with."""


@dataclass
class LoadedSubnet:
    module: nn.Module
    config: dict[str, Any]
    metadata: dict[str, Any]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state_for_saving(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


ENGINE_FILES = ("model.safetensors", "model.onnx", "config.json", "metadata.json")  # metadata last: it vouches


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _metadata_digest(meta: dict[str, Any]) -> str:
    """Hash of the metadata itself (every field but this hash), in canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return _sha256_bytes(json.dumps(body, sort_keys=True, default=str).encode())


def is_subnet_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory this module wrote (its metadata.json carries our format version)."""
    meta = Path(path) / "metadata.json"
    try:
        return isinstance(json.loads(meta.read_text()).get("format_version"), int)
    except (OSError, ValueError, AttributeError):
        return False


def check_overwritable(path: str | Path, overwrite: bool) -> None:
    """Refuse to write into an existing non-empty ``path`` unless ``overwrite`` and the engine created it.

    ``overwrite=True`` only ever replaces the files :func:`save_subnet` writes (:data:`ENGINE_FILES`); anything
    else in the directory is left alone, and a directory the engine did not create is refused outright."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if not path.is_dir():
        raise BadInputError(f"out={str(path)!r} is a file, not a directory; choose another out")
    if not overwrite:
        raise BadInputError(f"out={str(path)!r} exists and is not empty; pass overwrite=true to replace the "
                            "subnet exported there, or choose another out")
    if not is_subnet_dir(path):
        raise BadInputError(f"out={str(path)!r} was not created by nas.export (no metadata.json of an exported "
                            "subnet); overwrite=true only replaces an exported subnet. Choose an empty or new out")


def save_subnet(path: str | Path, module: nn.Module, config: dict[str, Any], metadata: dict[str, Any], *,
                overwrite: bool = False, onnx_input_shape: tuple[int, ...] | None = None) -> Path:
    """Write a subnet directory; returns its path.

    A new directory is written beside the target and renamed into place (a crash never leaves a half-written
    subnet). Replacing an exported subnet (``overwrite=True``) moves each engine file into place, metadata last;
    a kill in between leaves hashes that no longer match, which :func:`load_subnet` reports. Every file's SHA-256
    and the metadata's own hash are recorded, so any edited file is refused on load."""
    path = Path(path)
    check_overwritable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(_state_for_saving(module), str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        meta = {**metadata, "format_version": FORMAT_VERSION, "weights_sha256": file_sha256(tmp / "model.safetensors")}
        if onnx_input_shape is not None:
            export_onnx(module, tmp / "model.onnx", onnx_input_shape)
            meta["onnx_input_shape"] = list(onnx_input_shape)
        meta["files_sha256"] = {n: file_sha256(tmp / n) for n in ENGINE_FILES[:3] if (tmp / n).exists()}
        meta = json.loads(json.dumps(meta, default=str))
        meta["metadata_sha256"] = _metadata_digest(meta)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if path.is_dir():
            for name in ENGINE_FILES:
                if (tmp / name).exists():
                    os.replace(tmp / name, path / name)
                elif (path / name).exists():
                    (path / name).unlink()  # an ONNX file of the previous export that this one does not have
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SubnetFormatError(f"{path} is missing; a subnet directory holds config.json, "
                                "model.safetensors and metadata.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SubnetFormatError(f"{path} is not valid JSON: {exc}") from None


def _verify(path: Path, meta: dict[str, Any]) -> None:
    """Every recorded hash must match: metadata (version 2+), config, ONNX and weights."""
    if meta.get("format_version", 0) >= 2:
        if meta.get("metadata_sha256") != _metadata_digest(meta):
            raise SubnetFormatError(f"{path / 'metadata.json'} was modified after export (its hash does not match)")
        for name, expected in meta.get("files_sha256", {}).items():
            if not (path / name).exists():
                raise SubnetFormatError(f"{path / name} is missing")
            if file_sha256(path / name) != expected:
                raise SubnetFormatError(f"{path / name} does not match its metadata (sha256): the file is "
                                        "truncated or was modified; export the subnet again")
    weights = path / "model.safetensors"
    if not weights.exists():
        raise SubnetFormatError(f"{weights} is missing")
    expected = meta.get("weights_sha256")
    if expected is None:
        raise SubnetFormatError(f"{path / 'metadata.json'} has no weights_sha256")
    actual = file_sha256(weights)
    if actual != expected:
        raise SubnetFormatError(
            f"{weights} does not match its metadata (sha256 {actual[:12]}... != {expected[:12]}...): "
            "the file is truncated or was modified"
        )


def load_subnet(path: str | Path, *, map_location: str | torch.device = "cpu") -> LoadedSubnet:
    """Rebuild a saved subnet; raises :class:`SubnetFormatError` on any missing, truncated or altered file.

    Subnets of format version 1 (before config and metadata were hashed) are checked on their weights only."""
    path = Path(path)
    if not path.is_dir():
        raise SubnetFormatError(f"{path} is not a subnet directory")
    config, meta = _read_json(path / "config.json"), _read_json(path / "metadata.json")
    _verify(path, meta)
    weights = path / "model.safetensors"
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise SubnetFormatError(f"cannot read {weights}: {exc}") from None
    module = build_from_config(config)
    missing, unexpected = set(module.state_dict()) - set(state), set(state) - set(module.state_dict())
    if missing or unexpected:
        raise SubnetFormatError(f"weights do not fit the config: missing {sorted(missing)[:5]}, "
                                f"unexpected {sorted(unexpected)[:5]}")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise SubnetFormatError(f"weights do not fit the config: {exc}") from None
    return LoadedSubnet(module=module.eval(), config=config, metadata=meta)


def export_onnx(module: nn.Module, path: str | Path, input_shape: tuple[int, ...], opset: int = 17) -> Path:
    """ONNX export of a static module in eval mode (dynamic batch dimension)."""
    was_training = module.training
    module.eval()
    try:
        x = torch.zeros(*input_shape)
        torch.onnx.export(module, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    finally:
        module.train(was_training)
    return Path(path)
