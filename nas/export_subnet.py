"""Export one architecture of a trained supernet as a stand-alone subnet directory (library of ``nas.export``).

The subnet's BN statistics are recalibrated on training images first (OFA's protocol), so the exported module
carries statistics of its own widths; a supernet with BN and no data to recalibrate on is refused unless the
caller opts out (``recalibrate=False``). The directory holds config JSON, safetensors weights, an ONNX model and
metadata: space, arch id, resolution, MACs, params, source checkpoint hash, whether and on what BN statistics were
recalibrated, the input preprocessing a deployment needs (native size, resize, mean/std, channel order) and the
measured test accuracy when data is given.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from torch import nn

from nas.arch_input import parse_arch
from nas.data import create_data
from nas.evaluation import EvalSet, evaluate_arch
from nas.export_quant import check_format, check_policy, int8_artifact, policy_metadata
from nas.resolve import load_trained_supernet
from search_spaces.base import require
from search_spaces.errors import BadInputError
from search_spaces.quant import JointSpace
from supernets import recalibrated, save_subnet
from supernets.export import check_overwritable

__all__ = ["ExportError", "export_arch", "export_front_point", "has_batch_norm"]


class ExportError(BadInputError):
    """The requested point, checkpoint or architecture cannot be exported."""


def _checkpoint_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _resize_note(native: int, res: int) -> dict[str, Any]:
    """How ``nas.train.resize.resize_to`` brings a native-size batch to the subnet's resolution."""
    if res == native:
        return {"to": res, "method": "none"}
    return {"to": res, "method": "bilinear", "align_corners": False, "antialias": res < native,
            "applied": "after normalisation, to the whole NCHW batch (torch.nn.functional.interpolate)"}


def export_arch(checkpoint: str | Path, arch: Any, out: str | Path, *, data: dict[str, Any] | None = None,
                recalibrate: bool = True, calib_images: int = 2000, calib_batch: int = 200, seed: int = 0,
                overwrite: bool = False, onnx: bool = True, lookup: tuple[str | Path, ...] = (),
                extra: dict[str, Any] | None = None, fmt: str = "fake_quant",
                fallback: str | None = None, int8_kernels: str = "auto") -> dict[str, Any]:
    """Recalibrate, export and save ``arch`` (an arch value, its dict, JSON or id); returns the metadata written.

    ``data`` (``{"name": ..., "kwargs": {...}}``) is recalibrated on (training split) and measured on (test split).
    Without it a supernet with BN is refused unless ``recalibrate`` is false. A quantised supernet's policy is
    exported as ``fmt`` (:data:`nas.export_quant.FORMATS`; ``fallback``: see :mod:`nas.export_quant`)."""
    out, path = Path(out), Path(checkpoint)
    check_overwritable(out, overwrite)  # before the slow part: refuse a target we may not write
    net = load_trained_supernet(path).eval()
    space = net.space
    check_format(fmt, fallback, space, data=data, calib_images=calib_images, calib_batch=calib_batch,
                 int8_kernels=int8_kernels)
    arch = parse_arch(space, arch, lookup=(*lookup, path)) if not _is_arch(space, arch) else space.validate(arch)
    bn = has_batch_norm(net)
    if bn and recalibrate and not data:
        raise ExportError(f"the supernet {str(path)!r} has BatchNorm layers whose statistics are shared by all "
                          "subnets; give data=<data group> (e.g. data=fashion_mnist, the data it was trained on) to "
                          "recalibrate them, or recalibrate=false to export the shared statistics as they are")
    chans, res, _ = require(space, "input_shape", needed_by="nas.export")(arch)
    meta: dict[str, Any] = {"space": space.spec(), "arch_id": space.arch_id(arch), "arch": space.to_dict(arch),
                            "resolution": res, "macs": int(space.macs(arch)), "params": int(space.params(arch)),
                            "source_checkpoint": str(checkpoint), "source_sha256": _checkpoint_hash(path),
                            **(extra or {})}
    if isinstance(space, JointSpace):
        check_policy(fmt, fallback, space, arch)  # before the slow part
        meta["quantization"] = policy_metadata(space, arch)
    do_recal = bn and recalibrate
    write_int8 = None
    if data:
        dm = create_data(data["name"], **dict(data.get("kwargs") or {}))
        evalset = EvalSet(dm, split="test", calib_images=calib_images, calib_batch=calib_batch, seed=seed)
        calib, _ = evalset.at(res or dm.image_size)
        with net.use(arch), (recalibrated(net, calib) if do_recal else nullcontext(net)):
            meta["measured_test_top1"] = evaluate_arch(net, arch, evalset, recalibrate=False)["top1"]
            module = net.export(arch).module.eval()
        if fmt != "fake_quant":
            meta["quantization"]["export"], write_int8 = int8_artifact(fmt, fallback, space, arch, module, calib,
                                                                       evalset.at(res or dm.image_size)[1],
                                                                       evalset.targets, int8_kernels=int8_kernels)
        meta["measured_on"] = {"data": data["name"], "kwargs": dict(data.get("kwargs") or {}), "split": "test",
                               "images": evalset.n_images}
        meta["preprocessing"] = {**dm.preprocessing(), "resize": _resize_note(dm.image_size, res or dm.image_size)}
    else:
        module = net.export(arch).module.eval()
        meta["preprocessing"] = None  # unknown without data=; the space's input shape is in onnx_input_shape
    meta["bn_recalibration"] = ({"recalibrated": True, "data": data["name"] if data else None, "split": "train",
                                 "images": sum(int(x.size(0)) for x in calib), "batch": calib_batch, "seed": seed}
                                if do_recal else
                                {"recalibrated": False, "why": "recalibrate=false: the supernet's shared statistics"
                                 if bn else "no BatchNorm"})
    save_subnet(out, module, net.export(arch).config, meta, overwrite=overwrite,
                onnx_input_shape=(1, chans, res, res) if onnx else None)
    if write_int8 is not None:
        write_int8(out)
    return meta


def _is_arch(space: Any, arch: Any) -> bool:
    return isinstance(arch, space.arch_type())


def front_subnet_dir(front: str, rank: int) -> str:
    """The default directory name of an exported front point: ``subnet_rank<N>``, ``subnet_verified<N>``."""
    return f"subnet_verified{rank}" if front == "verified" else f"subnet_rank{rank}"


def export_front_point(results: str | Path, *, rank: int, out: str | Path, checkpoint: str | Path | None = None,
                       data: dict[str, Any] | None = None, recalibrate: bool = True,
                       overwrite: bool = False, front: str = "search", **formats: Any) -> str:
    """Export the ``rank``-th most accurate point of a search's front (``front_ranked.json``; with
    ``front="verified"`` the verified front, ranked by measured accuracy: ``verified_front.json``).

    Returns one line naming the exported subnet, with its measured test top-1 next to the predicted
    one when ``data`` is given; ``formats`` (``fmt``, ``fallback``, ``calib_images``, ``calib_batch``,
    ``int8_kernels``) go to
    :func:`export_arch`."""
    from nas.search.results import read_results_dir  # nas.search imports this module

    results = Path(results)
    points, config = read_results_dir(results, front)
    if not 0 <= rank < len(points):
        which = "verified front" if front == "verified" else "front"
        raise ExportError(f"rank={rank} is past the {which}: {results} has {len(points)} points "
                          f"(rank 0..{len(points) - 1})")
    if checkpoint is None:
        raise ExportError(f"the search in {results} had no trained supernet; pass checkpoint=<weights dir or "
                          "training checkpoint.pt> of a supernet of its space")
    check_overwritable(out, overwrite)
    point = points[rank]
    _check_same_space(results, point, checkpoint)
    extra = {"search_results": str(results), "front_rank": rank, "front": front,
             "predicted": {k: v for k, v in point.items() if isinstance(v, float)}, "search_config": config}
    meta = export_arch(checkpoint, point["arch"], out, data=data, recalibrate=recalibrate, overwrite=overwrite,
                       extra=extra, **formats)
    pred = point.get("top1")
    measured = meta.get("measured_test_top1")
    line = f"exported {'verified ' if front == 'verified' else ''}rank {rank} {meta['arch_id']} to {out}"
    val = point.get("measured_top1")
    if front == "verified" and measured is not None and val is not None:
        line += (f": measured val top-1 {val:.2f}% (predicted {point.get('predicted_top1', float('nan')):.2f}%), "
                 f"measured test top-1 {measured:.2f}%")
    elif measured is not None and pred is not None:
        searched = "measured val" if _measured_search(config) else "predicted"
        line += f": {searched} top-1 {pred:.2f}%, measured test top-1 {measured:.2f}% ({measured - pred:+.2f})"
    elif measured is not None:
        line += f": measured test top-1 {measured:.2f}%"
    return line


def _check_same_space(results: Path, point: dict[str, Any], checkpoint: str | Path) -> None:
    """The front point's space must be the checkpoint's (read from its spec without building the supernet)."""
    found = point.get("arch", {}).get("space")
    spec_file = Path(checkpoint) / "supernet.json"
    if found is None or not spec_file.is_file():
        return
    space = json.loads(spec_file.read_text())["spec"]["space"]
    # a joint (quantised) space's spec names its factory ('quant') and the space itself ('space_name') apart
    want = space.get("space_name") or space.get("name")
    if want != found:
        raise ExportError(f"results={str(results)!r} holds a search of space {found!r}, but checkpoint="
                          f"{str(checkpoint)!r} is a supernet of space {want!r}; pass the results of a search of "
                          f"{want!r} or a checkpoint of {found!r}")


def _measured_search(config_yaml: str) -> bool:
    """Whether the search measured accuracy on a supernet instead of predicting it."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(config_yaml)
    return bool(OmegaConf.select(cfg, "supernet.checkpoint", default=None)
                or OmegaConf.select(cfg, "accuracy.checkpoint", default=None))
