"""Search on a trained supernet's real accuracy: ``python -m nas.search accuracy=measured accuracy.checkpoint=<dir>``.

Accuracy is measured, not looked up: each proposed subnet is evaluated with inherited weights after BN
recalibration on held-out data (``nas.evaluation.EvalSet``). ``accuracy=measured`` selects the ``linas``
searcher by default (:mod:`nas.search.compose`): measure a batch, refit the predictor on everything measured, run
a predictor-only inner search, measure its best unmeasured points, checkpointed each round.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from nas.experiments import Experiment
from search_spaces.errors import BadInputError

__all__ = ["SupernetConfigError", "measured_experiment"]


class SupernetConfigError(BadInputError):
    """The supernet checkpoint or its data do not fit the requested search."""


def measured_experiment(ac: DictConfig, *, seed: int = 0, space_override: Any | None = None) -> Experiment:
    """An :class:`Experiment` whose accuracy is the trained supernet's measured top-1 on held-out data.

    ``ac`` is the ``accuracy=measured`` entry: ``checkpoint``, ``data``, ``split``, ``n_images``,
    ``calib_images``, ``calib_batch``, ``device``."""
    from nas.data import create_data
    from nas.evaluation import EvalSet, evaluate_subnets
    from nas.resolve import load_trained_supernet

    path = Path(str(ac.checkpoint))
    if not path.exists():
        raise SupernetConfigError(f"accuracy.checkpoint={str(path)!r} does not exist; give a weights directory "
                                  "(supernet.json + supernet.safetensors) or a training checkpoint file")
    model = load_trained_supernet(path).to(str(ac.device)).eval()
    space = model.space
    if space_override is not None and space_override.spec() != space.spec():
        raise SupernetConfigError(
            f"accuracy.checkpoint={str(path)!r} holds a supernet of space {space.spec()}, but search_space asks for "
            f"{space_override.spec()}; search the checkpoint's own space (drop search_space) or pass a checkpoint "
            "of that space")
    data_cfg = {"name": str(ac.data.name), "kwargs": dict(ac.data.get("kwargs") or {})}
    dm = create_data(data_cfg["name"], **data_cfg["kwargs"])
    if getattr(dm, "n_classes", None) not in (None, getattr(space, "n_classes", None)):
        raise SupernetConfigError(f"data {data_cfg['name']!r} has {dm.n_classes} classes but the supernet's space "
                                  f"has {getattr(space, 'n_classes', None)}")
    evalset = EvalSet(dm, split=str(ac.split), n_images=ac.get("n_images"), calib_images=int(ac.calib_images),
                      calib_batch=int(ac.calib_batch), seed=seed, device=str(ac.device))

    def accuracy(archs: Sequence[Any]) -> np.ndarray:
        with torch.inference_mode():
            rows = evaluate_subnets(model, list(archs), evalset)
        return np.array([r["top1"] for r in rows], dtype=np.float64)

    return Experiment(name="supernet", space=space, accuracy=accuracy,
                      accuracy_note=f"measured {ac.split} top-1 of the supernet {path} on {evalset.n_images} "
                                    f"{data_cfg['name']} images after BN recalibration",
                      supernet_path=path, data=data_cfg)
