"""Subnets on disk: a directory with ``config.json``, ``model.safetensors``, ``metadata.json`` (+ ``model.onnx``).

``save_subnet`` writes into a temporary sibling directory and renames it into place, so a crash never leaves a
half-written subnet; an existing non-empty target needs ``overwrite=True``. ``load_subnet`` rebuilds the module
from the config with :mod:`supernets.static` only (no supernet code), verifies the weights file's SHA-256
against the metadata, and loads tensors with safetensors (no code execution).
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

from supernets.static import build_from_config

__all__ = ["SubnetFormatError", "LoadedSubnet", "save_subnet", "load_subnet", "export_onnx", "file_sha256"]

FORMAT_VERSION = 1


class SubnetFormatError(ValueError):
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


def save_subnet(path: str | Path, module: nn.Module, config: dict[str, Any], metadata: dict[str, Any], *,
                overwrite: bool = False, onnx_input_shape: tuple[int, ...] | None = None) -> Path:
    """Write a subnet directory atomically; returns its path."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(_state_for_saving(module), str(tmp / "model.safetensors"))
        meta = {**metadata, "format_version": FORMAT_VERSION, "weights_sha256": file_sha256(tmp / "model.safetensors")}
        if onnx_input_shape is not None:
            export_onnx(module, tmp / "model.onnx", onnx_input_shape)
            meta["onnx_input_shape"] = list(onnx_input_shape)
        (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
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
    except json.JSONDecodeError as exc:
        raise SubnetFormatError(f"{path} is not valid JSON: {exc}") from None


def load_subnet(path: str | Path, *, map_location: str | torch.device = "cpu") -> LoadedSubnet:
    """Rebuild a saved subnet; raises :class:`SubnetFormatError` on any missing, truncated or altered file."""
    path = Path(path)
    if not path.is_dir():
        raise SubnetFormatError(f"{path} is not a subnet directory")
    config, meta = _read_json(path / "config.json"), _read_json(path / "metadata.json")
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
