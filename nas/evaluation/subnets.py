"""Accuracy of many subnets of a trained supernet after BN recalibration (library of ``python -m nas.evaluate``).

For each architecture: set it, re-estimate BN statistics on a fixed seeded subset of training images (OFA's
``set_running_statistics``: 2000 images in batches of 200), then measure top-1 (%) and cross-entropy on the
held-out split. The calibration and evaluation images are loaded once and resized once per resolution, so many
subnets cost no pipeline rebuilds. The supernet's own BN statistics are restored afterwards. Results are
measurement rows (arch id, arch JSON, top-1, loss, MACs, params) written as CSV for predictors and searchers.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm import tqdm

from nas.arch_input import parse_arch
from nas.checks import as_bool, as_int
from nas.data import DataModule, check_compatible
from search_spaces.errors import BadInputError
from supernets import Supernet, recalibrated

__all__ = ["EvalSet", "evaluate_subnets", "sample_archs", "write_measurements", "read_measurements",
           "MEASUREMENT_FIELDS", "EvaluateResult", "run_evaluate"]

MEASUREMENT_FIELDS = ("arch_id", "arch", "top1", "loss", "macs", "params")


class EvalSet:
    """Calibration and evaluation images of a data module, loaded once and cached per resolution."""

    def __init__(self, data: DataModule, *, split: str = "val", n_images: int | None = None,
                 calib_images: int = 2000, calib_batch: int = 200, calib_split: str = "train", seed: int = 0,
                 batch_size: int = 500, device: torch.device | str = "cpu", channels_last: bool = True) -> None:
        self.data, self.split, self.device = data, split, torch.device(device)
        self.channels_last = channels_last
        idx = data.fixed_subset(split, n_images, seed) if n_images else None
        batches = list(data.batches(split, idx, batch_size))
        self._x = [b.x for b in batches]
        self._y = [b.y.to(self.device) for b in batches]
        self._calib = data.calibration_batches(calib_images, calib_batch, seed, calib_split)
        self._cache: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def at(self, size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(calibration batches, evaluation batches) resized to ``size``, on the device."""
        if size not in self._cache:
            cl = self.channels_last
            from nas.train.resize import resize_to  # nas.train's trainer imports this module: import at use

            self._cache[size] = ([resize_to(x, size, channels_last=cl).to(self.device) for x in self._calib],
                                 [resize_to(x, size, channels_last=cl).to(self.device) for x in self._x])
        return self._cache[size]

    @property
    def targets(self) -> list[torch.Tensor]:
        return self._y

    @property
    def n_images(self) -> int:
        return sum(int(y.numel()) for y in self._y)


@torch.no_grad()
def evaluate_arch(model: Supernet, arch: Any, evalset: EvalSet, recalibrate: bool = True) -> dict[str, float]:
    """Top-1 (%) and mean cross-entropy of ``arch`` on the evaluation set."""
    from nas.train.resize import arch_resolution

    check_compatible(model.space, evalset.data, model=f"of space {model.space.name!r}")

    size = arch_resolution(model.space, arch, evalset.data.image_size)
    calib, xs = evalset.at(size)
    was_training = model.training
    with model.use(arch):
        ctx = recalibrated(model, calib) if recalibrate else nullcontext(model)
        with ctx:
            model.eval()
            correct, loss = 0, 0.0
            for x, y in zip(xs, evalset.targets):
                logits = model(x).float()
                correct += int((logits.argmax(1) == y).sum())
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    n = evalset.n_images
    return {"top1": 100.0 * correct / n, "loss": loss / n}


def evaluate_subnets(model: Supernet, archs: Sequence[Any], evalset: EvalSet, *, progress: bool = False,
                     recalibrate: bool = True) -> list[dict[str, Any]]:
    """Measurement rows for ``archs`` (BN recalibrated per subnet; supernet statistics restored)."""
    space, rows = model.space, []
    for arch in tqdm(archs, desc="evaluate", disable=not progress, dynamic_ncols=True):
        arch = space.validate(arch)
        res = evaluate_arch(model, arch, evalset, recalibrate)
        rows.append({"arch_id": str(arch.id), "arch": space.to_json(arch), "top1": res["top1"],
                     "loss": res["loss"], "macs": int(space.macs(arch)), "params": int(space.params(arch))})
    return rows


DRAWS = ("uniform", "cqap")


def sample_archs(space: Any, n: int, seed: int, *, include_extremes: bool = True, draw: str = "uniform") -> list[Any]:
    """``n`` distinct seeded random architectures, after min and max when ``include_extremes``.

    ``draw="uniform"`` samples the space's genes uniformly; ``"cqap"`` (joint quantisation spaces) draws EQ-Net's
    way: a target average bit-width uniformly, then per-layer bits from the probability map
    (:mod:`search_spaces.quant_cqap`), so low, middle and high average bits are covered evenly.
    """
    if draw not in DRAWS:
        raise BadInputError(f"draw={draw!r} is not a way to sample architectures; choose one of {list(DRAWS)}")
    rng = np.random.default_rng(seed)
    sample = space.sample
    if draw == "cqap":
        from search_spaces.quant_cqap import build_bit_map

        bit_map = build_bit_map(space, seed=seed)
        sample = bit_map.draw
    out = [space.min_arch(), space.max_arch()] if include_extremes else []
    seen = {a.id for a in out}
    limit = space.cardinality()
    attempts = 0
    while len(out) < n + (2 if include_extremes else 0) and len(seen) < limit and attempts < 100 * (n + 1):
        a = sample(rng)
        attempts += 1
        if a.id not in seen:
            seen.add(a.id)
            out.append(a)
    return out


def write_measurements(path: str | Path, rows: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, [*MEASUREMENT_FIELDS, *extra])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    from nas.checkpoints import atomic_write

    return atomic_write(path, lambda tmp: tmp.write_text(buf.getvalue()))


def read_measurements(path: str | Path, space: Any | None = None) -> list[dict[str, Any]]:
    """Rows of a measurements CSV; numeric columns parsed, ``arch`` decoded with ``space`` when given."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = set(MEASUREMENT_FIELDS) - set(rows[0] if rows else MEASUREMENT_FIELDS)
    if missing:
        raise ValueError(f"{path} lacks measurement columns {sorted(missing)}")
    for row in rows:
        row["top1"], row["loss"] = float(row["top1"]), float(row["loss"])
        row["macs"], row["params"] = int(row["macs"]), int(row["params"])
        row["arch"] = space.from_json(row["arch"]) if space is not None else json.loads(row["arch"])
    return rows


@dataclass
class EvaluateResult:
    path: Path | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def run_evaluate(cfg: Any) -> EvaluateResult:
    """Library entry of ``python -m nas.evaluate`` (a resolved ``conf/evaluate.yaml``)."""
    from nas.data import create_data
    from nas.resolve import load_trained_supernet

    start = time.perf_counter()
    sizes = {k: as_int(cfg.get(k), k, minimum=1) for k in ("calib_images", "calib_batch", "batch_size")}
    n_images = None if cfg.get("n_images") is None else as_int(cfg.n_images, "n_images", minimum=1)
    device = _device(str(cfg.device))
    model = load_trained_supernet(cfg.checkpoint).to(device)
    data = create_data(cfg.data.name, **dict(cfg.data.get("kwargs") or {}))
    check_compatible(model.space, data, model=str(cfg.checkpoint))
    if cfg.get("archs"):
        given = [cfg.archs] if isinstance(cfg.archs, str) else OmegaConf.to_container(cfg.archs, resolve=True)
        archs = [parse_arch(model.space, a, lookup=(cfg.checkpoint,)) for a in given]
    else:
        n_random = as_int(cfg.n_random, "n_random", minimum=0 if as_bool(cfg.extremes, "extremes") else 1)
        archs = sample_archs(model.space, n_random, as_int(cfg.seed, "seed", minimum=0),
                             include_extremes=bool(cfg.extremes), draw=str(cfg.get("draw", "uniform")))
    evalset = EvalSet(data, split=cfg.split, n_images=n_images, seed=cfg.seed, device=device,
                      channels_last=as_bool(cfg.get("channels_last", True), "channels_last"), **sizes)
    rows = evaluate_subnets(model, archs, evalset, progress=bool(cfg.progress))
    path = write_measurements(cfg.out, rows) if cfg.get("out") else None
    return EvaluateResult(path, rows, time.perf_counter() - start)


def _device(name: str) -> torch.device:
    try:
        return torch.device(name)
    except RuntimeError:
        raise BadInputError(f"device={name!r} is not a device; use cpu, cuda or cuda:<index>") from None
