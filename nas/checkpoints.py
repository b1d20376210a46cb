"""Atomic, resumable training checkpoints and supernet weight files.

A checkpoint is one ``torch.save`` file (loaded with ``weights_only=True``: tensors and plain containers only, no
pickled objects) holding the supernet spec, model, optimizer, scheduler, AMP scaler and sampler states, every RNG
state (Python, NumPy, torch CPU and CUDA), the epoch's example order, epoch, batch and step. It is written to a
temporary file in the same directory and moved into place with ``os.replace``, so a run killed at any instant
leaves either the previous or the new checkpoint, never a partial one. The file carries the SHA-256 of its content
(tensors and values), checked on every load, so a damaged or altered checkpoint is refused instead of resumed.
Final supernet weights are shipped as safetensors plus the JSON spec that rebuilds the supernet
(``supernet_from_spec``) and the SHA-256 of the weights file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from search_spaces.errors import CorruptFileError, MissingFileError
from supernets import Supernet, supernet_from_spec
from supernets.export import file_sha256

__all__ = [
    "CheckpointError", "atomic_write", "save_checkpoint", "load_checkpoint", "check_spec", "rng_state",
    "set_rng_state", "save_weights", "load_weights", "load_supernet", "WEIGHTS", "SPEC", "content_sha256",
]

FORMAT = "nas-train-checkpoint/1"
HASH_KEY = "content_sha256"
WEIGHTS, SPEC = "supernet.safetensors", "supernet.json"


class CheckpointError(CorruptFileError):
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


def content_sha256(obj: Any) -> str:
    """SHA-256 of a state's content: every tensor's dtype, shape and bytes, every plain value, in a fixed order.

    It survives a ``torch.save``/``torch.load`` round trip (and ``map_location``), unlike the file's bytes, so it
    can live inside the file it vouches for."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"V{obj!r}".encode())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically save a training state dict (adds the format tag and the content hash checked on load)."""
    full = {"format": FORMAT, **state}
    full[HASH_KEY] = content_sha256(full)
    return atomic_write(path, lambda tmp: torch.save(full, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint and verify its content hash (:class:`CheckpointError` if the file was altered)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist; give a training run directory (with "
                               f"{SPEC}) or its checkpoint.pt")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of format {FORMAT!r}")
    expected = state.pop(HASH_KEY, None)
    if expected is not None and content_sha256(state) != expected:  # checkpoints written before hashing have none
        raise CheckpointError(f"checkpoint {path} does not match its content hash: the file was altered or damaged "
                              "after it was written. Resume from another copy, or start the run over")
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
    doc = {"spec": model.full_spec(), "metadata": metadata or {}, "weights_sha256": file_sha256(directory / WEIGHTS)}
    atomic_write(directory / SPEC, lambda tmp: tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n"))
    return directory


def load_weights(model: Supernet, directory: str | Path) -> Supernet:
    """Load ``supernet.safetensors`` from ``directory`` into ``model`` after checking the spec matches."""
    directory = Path(directory)
    doc = _read_spec(directory)
    check_spec(model.full_spec(), doc["spec"], str(directory))
    expected = doc.get("weights_sha256")  # absent in weights saved before it was recorded
    if expected is not None and file_sha256(directory / WEIGHTS) != expected:
        raise CheckpointError(f"{directory / WEIGHTS} does not match the sha256 in {directory / SPEC}: the file was "
                              "altered or damaged after it was written")
    try:
        model.load_state_dict(load_file(str(directory / WEIGHTS)))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read {directory / WEIGHTS}: {exc}") from None
    return model


def _read_spec(directory: Path) -> dict[str, Any]:
    try:
        doc = json.loads((directory / SPEC).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory / SPEC} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{directory / SPEC} is not valid JSON ({exc}): truncated or edited") from None
    if not isinstance(doc, dict) or "spec" not in doc:
        raise CheckpointError(f"{directory / SPEC} holds no supernet spec")
    return doc



def load_supernet(path: str | Path) -> Supernet:
    """A supernet with trained weights from a weights directory (``supernet.json``) or a training checkpoint."""
    path = Path(path)
    if path.is_dir() and (path / SPEC).is_file():
        return load_weights(supernet_from_spec(_read_spec(path)["spec"]), path)
    if path.is_dir():
        raise CheckpointError(f"{path} holds no {SPEC}; pass a training checkpoint file or a weights directory")
    state = load_checkpoint(path)
    model = supernet_from_spec(state["spec"])
    model.load_state_dict(state["model"])
    return model
