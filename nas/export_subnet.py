"""Export one architecture of a trained supernet as a stand-alone subnet directory (library of ``nas.export``).

The subnet's BN statistics are recalibrated on training images first (OFA's protocol), so the exported module
carries statistics of its own widths; the directory holds config JSON, safetensors weights, metadata (space, arch
id, resolution, MACs, params, source checkpoint hash, measured accuracy when data is given) and an ONNX model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nas.data import create_data
from nas.train.checkpoint import load_supernet
from nas.train.evaluation import EvalSet, evaluate_arch
from search_spaces.base import require
from search_spaces.errors import BadInputError
from supernets import recalibrated, save_subnet
from supernets.export import check_overwritable

__all__ = ["ExportError", "export_arch", "export_front_point"]


class ExportError(BadInputError):
    """The requested point, checkpoint or architecture cannot be exported."""


def _checkpoint_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def export_arch(supernet_path: str | Path, arch: Any, out: str | Path, *, data: dict[str, Any] | None = None,
                overwrite: bool = False, onnx: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recalibrate, export and save ``arch`` (an arch value or its dict); returns the metadata written."""
    check_overwritable(out, overwrite)  # before the slow part: refuse a target we may not write
    net = load_supernet(supernet_path).eval()
    space = net.space
    if isinstance(arch, str):
        try:
            arch = json.loads(arch)
        except json.JSONDecodeError as exc:
            raise ExportError(f"arch={arch!r} is not a JSON architecture dict ({exc}); e.g. "
                              f"arch='{space.to_json(space.min_arch())}'") from None
    arch = space.from_dict(dict(arch)) if isinstance(arch, Mapping) else space.validate(arch)
    chans, res, _ = require(space, "input_shape", needed_by="nas.export")(arch)
    meta: dict[str, Any] = {"space": space.spec(), "arch_id": space.arch_id(arch), "arch": space.to_dict(arch),
                            "resolution": res, "macs": int(space.macs(arch)), "params": int(space.params(arch)),
                            "source_checkpoint": str(supernet_path),
                            "source_sha256": _checkpoint_hash(Path(supernet_path)), **(extra or {})}
    module: torch.nn.Module
    if data:
        dm = create_data(data["name"], **dict(data.get("kwargs") or {}))
        evalset = EvalSet(dm, split="test")
        measured = evaluate_arch(net, arch, evalset)
        meta["measured_test_top1"] = measured["top1"]
        calib, _ = evalset.at(res) if res else (None, None)
        with net.use(arch), recalibrated(net, calib):
            module = net.export(arch).module.eval()
    else:
        module = net.export(arch).module.eval()
    save_subnet(out, module, net.export(arch).config, meta, overwrite=overwrite,
                onnx_input_shape=(1, chans, res, res) if onnx else None)
    return meta


def export_front_point(results: str | Path, *, rank: int, out: str | Path, supernet: str | Path | None = None,
                       data: dict[str, Any] | None = None, overwrite: bool = False) -> str:
    """Export the ``rank``-th most accurate point of a search's front (``front_ranked.json``).

    Returns one line naming the exported subnet, with its measured test top-1 next to the predicted
    one when ``data`` is given."""
    from nas.search.results import read_results_dir

    results = Path(results)
    front, config = read_results_dir(results)
    if not 0 <= rank < len(front):
        raise ExportError(f"rank {rank} out of range: the front has {len(front)} points (0..{len(front) - 1})")
    if supernet is None:
        raise ExportError("this search had no trained supernet; pass supernet=<checkpoint or weights dir>")
    point = front[rank]
    extra = {"search_results": str(results), "front_rank": rank,
             "predicted": {k: v for k, v in point.items() if isinstance(v, float)}, "search_config": config}
    meta = export_arch(supernet, point["arch"], out, data=data, overwrite=overwrite, extra=extra)
    pred = point.get("top1")
    measured = meta.get("measured_test_top1")
    line = f"exported rank {rank} {meta['arch_id']} to {out}"
    if measured is not None and pred is not None:
        searched = "measured val" if _measured_search(config) else "predicted"
        line += f": {searched} top-1 {pred:.2f}%, measured test top-1 {measured:.2f}% ({measured - pred:+.2f})"
    return line


def _measured_search(config_yaml: str) -> bool:
    """Whether the search measured accuracy on a supernet (``supernet.checkpoint``) instead of predicting it."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(config_yaml)
    return bool(OmegaConf.select(cfg, "supernet.checkpoint", default=None))
