"""Search on a trained supernet's real accuracy: ``python -m nas.search supernet.checkpoint=<dir or .pt>``.

Accuracy is measured, not looked up: each proposed subnet is evaluated with inherited weights after BN
recalibration on held-out data (``nas.train.evaluation.EvalSet``), in LINAS rounds (:func:`nas.search.linas_search`):
measure a batch, refit the predictor on everything measured, run a predictor-only inner search with the configured
searcher, measure its best unmeasured points. The log of measurements is checkpointed each round, so a killed
search resumes without measuring anything twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from nas.experiments import Experiment
from nas.search.results import SearchResult

__all__ = ["SupernetConfigError", "measured_experiment", "linas_from_config"]


class SupernetConfigError(ValueError):
    """The supernet checkpoint or its data do not fit the requested search."""


def measured_experiment(cfg: DictConfig, space_override: Any | None = None) -> Experiment:
    """An :class:`Experiment` whose accuracy is the trained supernet's measured top-1 on held-out data."""
    from nas.data import create_data
    from nas.resolve import load_trained_supernet
    from nas.train.evaluation import EvalSet, evaluate_subnets

    sc = cfg.supernet
    path = Path(str(sc.checkpoint))
    if not path.exists():
        raise SupernetConfigError(f"supernet.checkpoint={str(path)!r} does not exist; give a weights directory "
                                  "(supernet.json + supernet.safetensors) or a training checkpoint file")
    model = load_trained_supernet(path).to(str(sc.device)).eval()
    space = model.space
    if space_override is not None and space_override.spec() != space.spec():
        raise SupernetConfigError(
            f"supernet.checkpoint={str(path)!r} holds a supernet of space {space.spec()}, but search_space asks for "
            f"{space_override.spec()}; search the checkpoint's own space (drop search_space) or pass a checkpoint "
            "of that space")
    data_cfg = {"name": str(sc.data.name), "kwargs": dict(sc.data.get("kwargs") or {})}
    dm = create_data(data_cfg["name"], **data_cfg["kwargs"])
    if getattr(dm, "n_classes", None) not in (None, getattr(space, "n_classes", None)):
        raise SupernetConfigError(f"data {data_cfg['name']!r} has {dm.n_classes} classes but the supernet's space "
                                  f"has {getattr(space, 'n_classes', None)}")
    evalset = EvalSet(dm, split=str(sc.split), n_images=sc.get("n_images"), calib_images=int(sc.calib_images),
                      calib_batch=int(sc.calib_batch), seed=int(cfg.seed), device=str(sc.device))

    def accuracy(archs: Sequence[Any]) -> np.ndarray:
        with torch.inference_mode():
            rows = evaluate_subnets(model, list(archs), evalset)
        return np.array([r["top1"] for r in rows], dtype=np.float64)

    n = evalset.n_images
    return Experiment(name="supernet", space=space, accuracy=accuracy,
                      accuracy_note=f"measured {sc.split} top-1 of the supernet {path} on {n} {data_cfg['name']} "
                                    f"images after BN recalibration (LINAS: {int(sc.rounds)} rounds of "
                                    f"{int(sc.batch_size)}, {sc.predictor} predictor between rounds)",
                      supernet_path=path, data=data_cfg)


def linas_from_config(cfg: DictConfig, exp: Experiment, objectives: list, constraints: list, out: Path,
                      searcher_kwargs: dict[str, Any]) -> SearchResult:
    """Run the LINAS rounds for :func:`nas.search.app.search_from_config` and return the measured result."""
    from nas.search.linas import linas_search
    from predictors import create_predictor

    sc, space, seed = cfg.supernet, exp.space, int(cfg.seed)
    outcome = linas_search(space, objectives, constraints,
                           predictor_factory=lambda: create_predictor(str(sc.predictor), space=space, seed=seed),
                           rounds=int(sc.rounds), batch_size=int(sc.batch_size), inner_searcher=str(cfg.searcher.name),
                           inner_kwargs=searcher_kwargs, inner_budget=int(cfg.budget), seed=seed, out_dir=out,
                           resume=bool(cfg.resume))
    return outcome.result
