"""Atomic, resumable training checkpoints and supernet weight files.

A checkpoint is one ``torch.save`` file (loaded with ``weights_only=True``: tensors and plain containers only, no
pickled objects) holding the supernet spec, model, optimizer, scheduler, AMP scaler and sampler states, every RNG
state (Python, NumPy, torch CPU and CUDA), the epoch's example order, epoch, batch and step. It is written to a
temporary file in the same directory and moved into place with ``os.replace``, so a run killed at any instant
leaves either the previous or the new checkpoint, never a partial one. Final supernet weights are shipped as
safetensors plus the JSON spec that rebuilds the supernet (``supernet_from_spec``).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from supernets import Supernet, supernet_from_spec

__all__ = [
    "CheckpointError", "atomic_write", "save_checkpoint", "load_checkpoint", "check_spec", "rng_state",
    "set_rng_state", "save_weights", "load_weights", "load_supernet", "WEIGHTS", "SPEC",
]

FORMAT = "nas-train-checkpoint/1"
WEIGHTS, SPEC = "supernet.safetensors", "supernet.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or belongs to a different supernet/space."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def rng_state() -> dict[str, Any]:
    """All global RNG states as tensors / plain containers."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically save a training state dict (adds the format tag)."""
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of format {FORMAT!r}")
    return state


def check_spec(expected: dict[str, Any], found: dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` naming the differing fields when two supernet specs differ."""
    if _norm(expected) == _norm(found):
        return
    diffs = [f"space {expected['space'].get('name')!r} vs {found['space'].get('name')!r}"] \
        if expected["space"].get("name") != found["space"].get("name") else []
    for part in ("space", "kwargs"):
        e, f = _norm(expected.get(part, {})), _norm(found.get(part, {}))
        diffs += [f"{part}.{k}: expected {e.get(k)!r}, found {f.get(k)!r}" for k in sorted(set(e) | set(f))
                  if e.get(k) != f.get(k)]
    if expected.get("name") != found.get("name"):
        diffs.insert(0, f"supernet {expected.get('name')!r} vs {found.get('name')!r}")
    raise CheckpointError(f"{source} was written for a different supernet: " + "; ".join(diffs[:6]))


def _norm(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def save_weights(directory: str | Path, model: Supernet, metadata: dict[str, Any] | None = None) -> Path:
    """``supernet.safetensors`` (weights) + ``supernet.json`` (spec and metadata), each written atomically."""
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    doc = {"spec": model.full_spec(), "metadata": metadata or {}}
    atomic_write(directory / SPEC, lambda tmp: tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n"))
    return directory


def load_weights(model: Supernet, directory: str | Path) -> Supernet:
    """Load ``supernet.safetensors`` from ``directory`` into ``model`` after checking the spec matches."""
    directory = Path(directory)
    doc = json.loads((directory / SPEC).read_text())
    check_spec(model.full_spec(), doc["spec"], str(directory))
    model.load_state_dict(load_file(str(directory / WEIGHTS)))
    return model


def load_supernet(path: str | Path) -> Supernet:
    """A supernet with trained weights from a weights directory (``supernet.json``) or a training checkpoint."""
    path = Path(path)
    if path.is_dir() and (path / SPEC).is_file():
        doc = json.loads((path / SPEC).read_text())
        return load_weights(supernet_from_spec(doc["spec"]), path)
    if path.is_dir():
        raise CheckpointError(f"{path} holds no {SPEC}; pass a training checkpoint file or a weights directory")
    state = load_checkpoint(path)
    model = supernet_from_spec(state["spec"])
    model.load_state_dict(state["model"])
    return model
