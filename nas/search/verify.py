"""Verify a searched front on the trained supernet: ``python -m nas.search ... verify.top=40``.

A predictor-driven search ranks its front by *predicted* accuracy; the points a user picks from it are the ones the
predictor over-rates most (the winner's curse of searching on a noisy model). Verification measures a set of front
points with the supernet itself (inherited weights, BN recalibrated, held-out split; :mod:`nas.evaluation`), and
re-derives the front on the measured accuracy:

* which points: ``verify.top`` front points spread over the whole front (farthest-point sampling in the normalised
  objective space, starting from the most accurate predicted point), all of them when the front is no larger, plus
  the space's anchors (``SearchSpace.anchors()``: e.g. the largest architecture at every uniform bit-width) that the
  search evaluated and that meet the constraints, as references a deployment would otherwise fall back on;
* the verified front: the non-dominated set of the measured points, with the measured accuracy in place of the
  predicted one and every other objective as the search computed it;
* written to ``verified.csv`` (every measured point: predicted and measured accuracy, anchor flag, whether it is on
  the verified front) and ``verified_front.json`` (the verified front, most accurate first, for ``nas.export arch=``).

Measurements are cached in ``verified.csv`` with the settings they were taken under, so re-running the same search
with a larger ``verify.top`` measures only the new points. It needs a trained supernet: the preset's embedded one
(``experiment=fmnist_default|eqnet_fmnist``) or ``accuracy=measured accuracy.checkpoint=...``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from nas.checks import as_bool, as_int
from nas.experiments import Experiment
from nas.search.pareto import pareto_front
from nas.search.results import FRONT_FILES, SearchResult, atomic_write_text, records_csv
from search_spaces.errors import BadInputError

__all__ = ["VerifySettings", "verify_settings", "select_points", "verify_front", "VerifyOutcome"]

FILE, FRONT_FILE = "verified.csv", FRONT_FILES["verified"]


class VerifyConfigError(BadInputError):
    """``verify.*`` asks for something this search cannot do."""


@dataclass(frozen=True)
class VerifySettings:
    top: int
    anchors: bool
    split: str
    n_images: int | None
    calib_images: int
    calib_batch: int
    device: str

    def key(self) -> str:
        """What a cached measurement depends on (not ``top``/``anchors``: they choose points, not how to measure)."""
        return f"{self.split}/{self.n_images}/{self.calib_images}/{self.calib_batch}"


def verify_settings(cfg: DictConfig, exp: Experiment) -> VerifySettings | None:
    """The ``verify`` group, checked before the search runs (``None`` when off)."""
    v = cfg.get("verify")
    if not v:
        return None
    top = as_int(v.get("top", 0), "verify.top", minimum=-1)
    if top == 0:
        return None
    if exp.supernet_path is None:
        raise VerifyConfigError(
            f"verify.top={top} measures front points on a trained supernet, but experiment {exp.name!r} has none "
            "(its accuracy comes from a predictor or table only); use a preset with an embedded supernet "
            "(experiment=fmnist_default or eqnet_fmnist), or accuracy=measured accuracy.checkpoint=<dir>, or drop "
            "verify.top")
    if not exp.data:
        raise VerifyConfigError(f"verify.top={top}: experiment {exp.name!r} names no data to measure on")
    n_images = v.get("n_images")
    return VerifySettings(top=top, anchors=as_bool(v.get("anchors", True), "verify.anchors"),
                          split=str(v.get("split", "val")),
                          n_images=None if n_images is None else as_int(n_images, "verify.n_images", minimum=1),
                          calib_images=as_int(v.get("calib_images", 500), "verify.calib_images", minimum=1),
                          calib_batch=as_int(v.get("calib_batch", 250), "verify.calib_batch", minimum=1),
                          device=str(v.get("device", "cpu")))


def _spread(F: np.ndarray, k: int) -> list[int]:
    """``k`` rows of ``F`` (minimisation) chosen by farthest-point sampling in min-max normalised objective space,
    starting from the best row of the first objective (the most accurate)."""
    span = np.ptp(F, axis=0)
    Z = (F - F.min(axis=0)) / np.where(span > 0, span, 1.0)
    chosen = [int(np.argmin(F[:, 0]))]
    dist = np.linalg.norm(Z - Z[chosen[0]], axis=1)
    while len(chosen) < min(k, len(F)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(Z - Z[nxt], axis=1))
    return chosen


def select_points(result: SearchResult, top: int, anchors: bool,
                  ids: list[str] | None = None) -> tuple[list[int], set[int]]:
    """(rows of the result to measure, the rows among them that are anchors); ``ids``: ``result.arch_ids`` when
    the caller has them already."""
    front = result.front_indices()
    rows = [int(front[i]) for i in _spread(result.F[front], len(front) if top < 0 else top)] if len(front) else []
    anchor_rows: set[int] = set()
    if anchors:
        space = result.space
        wanted = {space.arch_id(a) for a in space.anchors()}
        feasible = result.feasible
        anchor_ids = ids if ids is not None else result.arch_ids
        anchor_rows = {i for i, aid in enumerate(anchor_ids) if aid in wanted and feasible[i]}
    return rows + sorted(anchor_rows - set(rows)), anchor_rows


@dataclass
class VerifyOutcome:
    rows: list[dict[str, Any]]       # every measured point (predicted and measured accuracy, flags)
    front: list[dict[str, Any]]      # the verified front, most accurate measured first
    measured_new: int
    note: str


def _read_cache(path: Path, key: str, name: str) -> dict[str, float]:
    """Measurements of an earlier verification of this results dir taken with the same settings."""
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {r["arch_id"]: float(r[f"measured_{name}"]) for r in csv.DictReader(fh)
                if r.get("settings") == key and r.get(f"measured_{name}")}


def verify_front(result: SearchResult, exp: Experiment, settings: VerifySettings, out: Path,
                 *, seed: int = 0) -> VerifyOutcome:
    """Measure the chosen points, write ``verified.csv`` and ``verified_front.json``, return the verified front."""
    import torch

    from nas.data import create_data
    from nas.evaluation import EvalSet, evaluate_subnets
    from nas.resolve import load_trained_supernet
    from predictors.metrics import kendall_tau

    acc = result.objectives[0]
    if acc["direction"] != "max":
        raise VerifyConfigError(f"verify needs accuracy as the first objective; this search's first is "
                                f"{acc['name']!r} ({acc['direction']})")
    ids = result.arch_ids
    rows, anchor_rows = select_points(result, settings.top, settings.anchors, ids)
    name = acc["name"]
    cache = _read_cache(out / FILE, settings.key(), name)
    todo = [i for i in rows if ids[i] not in cache]
    if todo:
        model = load_trained_supernet(Path(exp.supernet_path)).to(settings.device).eval()  # type: ignore[arg-type]
        data = create_data(exp.data["name"], **(exp.data.get("kwargs") or {}))
        evalset = EvalSet(data, split=settings.split, n_images=settings.n_images, calib_images=settings.calib_images,
                          calib_batch=min(settings.calib_batch, settings.calib_images), seed=seed,
                          device=settings.device)
        with torch.inference_mode():
            got = evaluate_subnets(model, [result.archs[i] for i in todo], evalset)
        cache.update({r["arch_id"]: float(r["top1"]) for r in got})
    measured = np.array([cache[ids[i]] for i in rows], dtype=np.float64)
    F = result.F[rows].copy()
    F[:, 0] = -measured  # minimisation form, as the search's own F
    on_front = {rows[j] for j in pareto_front(F)}
    records = result.records(np.asarray(rows, dtype=np.int64))
    table: list[dict[str, Any]] = []
    for rec, i, m in zip(records, rows, measured):
        table.append({"query": rec["query"], "arch_id": rec["arch_id"], f"predicted_{name}": rec[name],
                      f"measured_{name}": float(m),
                      **{k: rec[k] for k in result.metric_names if k != name},
                      "anchor": i in anchor_rows, "on_search_front": rec["on_front"],
                      "on_verified_front": i in on_front, "settings": settings.key(), "arch": rec["arch"]})
    _write(out, table, name, result.metric_names)
    front = sorted((r for r in table if r["on_verified_front"]), key=lambda r: -r[f"measured_{name}"])
    atomic_write_text(out / FRONT_FILE, json.dumps(front, indent=1))
    pred = np.array([r[f"predicted_{name}"] for r in table])
    gap = pred - measured
    tau = kendall_tau(measured, pred) if len(table) > 2 else float("nan")
    n_images = settings.n_images or "all"
    note = (f"verified {len(table)} points ({len(anchor_rows & set(rows))} anchors, {len(todo)} newly measured) on "
            f"{n_images} {settings.split} images after BN recalibration on {settings.calib_images}: predicted - "
            f"measured {name} {gap.mean():+.2f} (sd {gap.std():.2f}), Kendall tau {tau:.2f}; the verified front "
            f"has {len(front)} points ({sum(r['anchor'] for r in front)} of them anchors)")
    return VerifyOutcome(rows=table, front=front, measured_new=len(todo), note=note)


def _write(out: Path, table: list[dict[str, Any]], name: str, metrics: list[str]) -> None:
    cols = ["query", "arch_id", f"predicted_{name}", f"measured_{name}", *(m for m in metrics if m != name),
            "anchor", "on_search_front", "on_verified_front", "settings", "arch"]
    atomic_write_text(out / FILE, records_csv(table, cols))


def verified_table(outcome: VerifyOutcome, name: str, limit: int = 10) -> str:
    """The verified front as printed by ``nas.search`` (most accurate measured first)."""
    if not outcome.front:
        return "verified front: empty"
    width = max(48, *(len(r["arch_id"]) for r in outcome.front[:limit]))
    head = f"{'rank':>4}  {'arch id':<{width}} {'measured':>9} {'predicted':>9}  anchor"
    lines = [head, "-" * len(head)]
    for k, r in enumerate(outcome.front[:limit]):
        lines.append(f"{k:>4}  {r['arch_id']:<{width}} {r[f'measured_{name}']:>9.2f} {r[f'predicted_{name}']:>9.2f}"
                     f"  {'yes' if r['anchor'] else ''}")
    if len(outcome.front) > limit:
        lines.append(f"... {len(outcome.front) - limit} more in {FRONT_FILE}")
    return "\n".join(lines)
