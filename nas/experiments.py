"""Search presets: where a search's space, accuracy estimate and (optionally) supernet come from.

An :class:`Experiment` bundles a search space, an accuracy function (a predictor fitted on measured subnet
accuracies) and, when the preset has one, the trained supernet and data module to export and measure a chosen
subnet. Presets are registered factories (``EXPERIMENTS``) chosen by config, e.g. ``experiment=ofa_imagenet``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.registry import Registry
from search_spaces import SearchSpace
from search_spaces.errors import BadInputError

__all__ = ["Experiment", "EXPERIMENTS", "create_experiment"]


@dataclass
class Experiment:
    """What a search needs besides objectives from hardware: space, accuracy and provenance."""

    name: str
    space: SearchSpace
    accuracy: Callable[[Sequence[Any]], np.ndarray]
    accuracy_note: str
    supernet_path: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def create_experiment(name: str, **kwargs: Any) -> Experiment:
    return EXPERIMENTS.create(name, **kwargs)



def _fit_predictor(space: SearchSpace, archs: Sequence[Any], y: np.ndarray, name: str, seed: int) -> Any:
    from predictors import create_predictor

    return create_predictor(name, space=space, seed=seed).fit(list(archs), np.asarray(y, dtype=float))


@EXPERIMENTS.register("fmnist_default")
def fmnist_default(*, directory: str | None = None, predictor: str = "ridge_svr", seed: int = 0) -> Experiment:
    """The embedded default: a supernet trained on Fashion-MNIST by ``nas.train`` and measured subnet accuracies
    (both committed under ``nas/embedded/``); accuracy is predicted by a predictor fitted on those measurements."""
    from nas import embedded
    from nas.checkpoints import load_supernet
    from nas.evaluation import read_measurements

    root = Path(directory) if directory else embedded.path(embedded.DEFAULT)
    if not (root / "measurements.csv").is_file():
        raise FileNotFoundError(f"{root} holds no measurements.csv; regenerate it with the commands in "
                                f"{root / 'README.md'}")
    space = load_supernet(root).space
    rows = read_measurements(root / "measurements.csv", space)
    archs, y = [r["arch"] for r in rows], np.array([r["top1"] for r in rows])
    model = _fit_predictor(space, archs, y, predictor, seed)
    measured = {space.arch_id(a): float(v) for a, v in zip(archs, y)}
    return Experiment(
        name="fmnist_default", space=space, accuracy=lambda archs: model.predict(list(archs)),
        accuracy_note=f"{predictor} predictor fitted on {len(rows)} measured subnets of the embedded Fashion-MNIST "
                      f"supernet (validation top-1 after BN recalibration)",
        supernet_path=root, data={"name": "fashion_mnist", "kwargs": {}}, measured=measured)


@EXPERIMENTS.register("eqnet_fmnist")
def eqnet_fmnist(*, directory: str | None = None, predictor: str = "ridge_svr", seed: int = 0) -> Experiment:
    """The embedded quantised default: an EQ-Net supernet over the Fashion-MNIST OFA-MBv3 space x per-layer bits
    (``nas/embedded/quant_ofa_mbv3_fmnist``) and the measured top-1 of (arch, policy) pairs drawn the CQAP way."""
    from nas import embedded

    exp = fmnist_default(directory=directory or str(embedded.path(embedded.QUANT_DEFAULT)), predictor=predictor,
                         seed=seed)
    exp.name = "eqnet_fmnist"
    exp.accuracy_note = exp.accuracy_note.replace("embedded Fashion-MNIST supernet",
                                                  "embedded quantised (EQ-Net) Fashion-MNIST supernet")
    return exp


@EXPERIMENTS.register("ofa_imagenet")
def ofa_imagenet(*, resolution: int = 224) -> Experiment:
    """OFA-MobileNetV3 (w1.0) on ImageNet: the shipped predictor fitted on measured ImageNet top-1 of OFA subnets."""
    from predictors import load_pretrained
    from search_spaces import create_space

    space = create_space("ofa_mbv3", resolutions=(resolution,))
    model = load_pretrained("ofa_mbv3_imagenet")
    return Experiment(name="ofa_imagenet", space=space, accuracy=lambda archs: model.predict(list(archs)),
                      accuracy_note="shipped predictor fitted on measured ImageNet top-1 of OFA-MBv3 subnets "
                                    "(see predictors/pretrained)")


@EXPERIMENTS.register("custom")
def custom(*, measurements: str | None = None, space: str | None = None, predictor: str = "ridge_svr",
           supernet: str | None = None, seed: int = 0) -> Experiment:
    """A user's space (``search_space=...``) with accuracy from a measurements CSV (``arch`` JSON + ``top1``)."""
    from nas.evaluation import read_measurements
    from search_spaces import create_space

    if measurements is None:
        raise BadInputError("experiment=custom needs experiment.kwargs.measurements=<csv with arch and top1 columns>")
    sp = create_space(space) if space else None
    holder: dict[str, Any] = {}

    def accuracy(archs: Sequence[Any]) -> np.ndarray:
        if "model" not in holder:  # the space is attached by the app after the custom space is imported
            rows = read_measurements(measurements, exp.space)
            holder["model"] = _fit_predictor(exp.space, [r["arch"] for r in rows],
                                             np.array([r["top1"] for r in rows]), predictor, seed)
        return holder["model"].predict(list(archs))

    exp = Experiment(name="custom", space=sp, accuracy=accuracy,  # type: ignore[arg-type]
                     accuracy_note=f"{predictor} predictor fitted on {measurements}",
                     supernet_path=Path(supernet) if supernet else None)
    return exp
