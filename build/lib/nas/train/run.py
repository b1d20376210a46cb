"""Build a training run from a resolved hydra config (``conf/train.yaml``) and execute it.

The config groups mirror the registries: ``search_space`` (``SPACES``), ``supernet`` (``SUPERNETS``), ``data``
(``DATA``), ``sampler`` (``SAMPLERS``) and ``trainer`` (:class:`~nas.train.trainer.TrainConfig` fields). A plain
sampler runs one :class:`~nas.train.trainer.Trainer`; a phased recipe runs :func:`~nas.train.phases.train_phased`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from nas.data import DataModule, create_data
from nas.resolve import resolve_space, resolve_supernet
from nas.train.checkpoint import CheckpointError
from nas.train.distributed import LocalRun, init_distributed
from nas.train.phases import PhasedResult, phase_dirs, train_phased
from nas.train.resize import arch_resolution, resize_to
from nas.train.samplers.base import PhasedSampler, create_sampler
from nas.train.trainer import CHECKPOINT, TrainConfig, Trainer, TrainResult
from search_spaces import SearchSpace
from search_spaces.errors import BadInputError
from supernets import Supernet

__all__ = ["run_train", "build_space", "build_supernet", "build_data", "check_compatible"]


def _plain(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def build_space(cfg: Mapping[str, Any]) -> SearchSpace:
    """A registered space or a user's ``module:factory`` (:mod:`nas.resolve`)."""
    return resolve_space(cfg)


def build_supernet(cfg: Mapping[str, Any], space: SearchSpace) -> Supernet:
    return resolve_supernet(cfg, space)


def build_data(cfg: Mapping[str, Any]) -> DataModule:
    return create_data(cfg["name"], **_plain(cfg.get("kwargs")))


def check_compatible(space: SearchSpace, data: DataModule) -> None:
    """The data's channels and classes must match what the space's networks take and predict."""
    want = (getattr(space, "in_chans", data.in_chans), getattr(space, "n_classes", data.n_classes))
    if want != (data.in_chans, data.n_classes):
        raise ValueError(f"data {data.name!r} has {data.in_chans} channel(s) and {data.n_classes} classes, but space "
                         f"{space.name!r} expects in_chans={want[0]}, n_classes={want[1]}; pick a matching "
                         f"search_space or override its kwargs")


def bind_heldout(sampler: Any, data: DataModule, space: SearchSpace, heldout: Mapping[str, Any], *,
                 seed: int = 0) -> int:
    """Bind fixed held-out batches (``{split, n_images, batch_size}``) to a sampler that learns from held-out losses
    between epochs' steps (ShiftNAS's ``every_steps``); images at the largest resolution of the space."""
    if not callable(getattr(sampler, "bind_heldout", None)):
        raise BadInputError(f"sampler.kwargs.heldout is given, but sampler {type(sampler).__name__} takes no held-out "
                            "batches (ShiftNAS does, for every_steps updates)")
    unknown = sorted(set(heldout) - {"split", "n_images", "batch_size"})
    if unknown:
        raise BadInputError(f"sampler.kwargs.heldout has unknown keys {unknown}; allowed: split, n_images, batch_size")
    split, n = str(heldout.get("split", "val")), int(heldout.get("n_images", 500))
    bs = int(heldout.get("batch_size", 250))
    size = arch_resolution(space, space.max_arch(), data.image_size)
    idx = data.fixed_subset(split, n, seed)
    sampler.bind_heldout([(resize_to(b.x, size), b.y) for b in data.batches(split, idx, bs)])
    return len(idx)


def run_train(cfg: Mapping[str, Any]) -> TrainResult | PhasedResult:
    """Library entry of ``python -m nas.train`` (also under ``torchrun``: see :mod:`nas.train.distributed`)."""
    tcfg = TrainConfig(**_plain(cfg["trainer"]))
    dist = init_distributed(_plain(cfg.get("distributed")), device=tcfg.device)
    try:
        return _run_train(cfg, tcfg, dist)
    finally:
        dist.close()


def _run_train(cfg: Mapping[str, Any], tcfg: TrainConfig, dist: LocalRun) -> TrainResult | PhasedResult:
    space = build_space(cfg["search_space"])
    data = build_data(cfg["data"])
    check_compatible(space, data)
    out_dir, resume = Path(cfg["out_dir"]), bool(cfg.get("resume", False))
    sampler_kwargs = _plain(cfg["sampler"].get("kwargs"))
    heldout = sampler_kwargs.pop("heldout", None)
    sampler = create_sampler(cfg["sampler"]["name"], space, seed=tcfg.seed, **sampler_kwargs)
    if heldout:
        bind_heldout(sampler, data, space, heldout, seed=tcfg.seed)

    def make_model() -> Supernet:
        torch.manual_seed(tcfg.seed)
        return dist.prepare(build_supernet(cfg["supernet"], space))

    build_supernet(cfg["supernet"], space)  # a bad supernet spec fails here, before anything is written
    existing = [out_dir / CHECKPOINT] + ([d / CHECKPOINT for d in phase_dirs(out_dir, sampler)]
                                         if isinstance(sampler, PhasedSampler) else [])
    if not resume and any(p.exists() for p in existing):
        raise CheckpointError(f"{out_dir} already holds a training run; pass resume=true to continue it or choose "
                              f"another out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        OmegaConf.save(OmegaConf.create(_plain(cfg)), out_dir / "config.yaml")
    if isinstance(sampler, PhasedSampler):
        return train_phased(make_model, data, sampler, tcfg, out_dir, resume=resume, dist=dist)
    return Trainer(make_model(), data, sampler, tcfg, out_dir, dist=dist).fit(resume=resume)
