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

from nas.checks import as_bool
from nas.data import DataModule, check_compatible, create_data
from nas.resolve import resolve_space, resolve_supernet
from nas.train.distributed import LocalRun, init_distributed
from nas.train.init_from import init_from
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
    out_dir, resume = Path(cfg["out_dir"]), as_bool(cfg.get("resume", False), "resume")
    sampler_kwargs = _plain(cfg["sampler"].get("kwargs"))
    heldout = sampler_kwargs.pop("heldout", None)
    sampler = create_sampler(cfg["sampler"]["name"], space, seed=tcfg.seed, **sampler_kwargs)
    if heldout:
        bind_heldout(sampler, data, space, heldout, seed=tcfg.seed)

    init_path = cfg.get("init_from")

    def make_model() -> Supernet:
        torch.manual_seed(tcfg.seed)
        model = build_supernet(cfg["supernet"], space)
        return dist.prepare(init_from(model, init_path) if init_path else model)

    build_supernet(cfg["supernet"], space)  # a bad supernet spec fails here, before anything is written
    existing = [out_dir / CHECKPOINT] + ([d / CHECKPOINT for d in phase_dirs(out_dir, sampler)]
                                         if isinstance(sampler, PhasedSampler) else [])
    if not resume and any(p.exists() for p in existing):
        raise BadInputError(f"{out_dir} already holds a training run; pass resume=true to continue it or choose "
                            f"another out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        _save_config(out_dir, _plain(cfg), resume=resume and any(p.exists() for p in existing),
                     allow_change=as_bool(cfg.get("allow_config_change", False), "allow_config_change"))
    if isinstance(sampler, PhasedSampler):
        return train_phased(make_model, data, sampler, tcfg, out_dir, resume=resume, dist=dist)
    return Trainer(make_model(), data, sampler, tcfg, out_dir, dist=dist).fit(resume=resume)


#: config keys that change how a run executes, not what it computes: free to differ on resume
RUNTIME_KEYS = ("out_dir", "resume", "runtime", "retain_memory", "allow_config_change", "distributed", "trainer.device",
                "trainer.threads", "trainer.progress", "trainer.tensorboard", "trainer.log_every")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every computing key that differs (:data:`RUNTIME_KEYS` ignored)."""
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in sorted(set(a) | set(b)) if not any(k == r or k.startswith(r + ".") for r in RUNTIME_KEYS)]
    return [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in keys if a.get(k) != b.get(k)]


def _save_config(out_dir: Path, cfg: dict[str, Any], *, resume: bool, allow_change: bool) -> None:
    """Write ``config.yaml``; on resume, refuse a changed config (unless allowed) and never overwrite the original."""
    path = out_dir / "config.yaml"
    if not (resume and path.is_file()):
        OmegaConf.save(OmegaConf.create(cfg), path)
        return
    diff = config_diff(OmegaConf.to_container(OmegaConf.load(path), resolve=False), cfg)  # type: ignore[arg-type]
    if not diff:
        return
    if not allow_change:
        raise BadInputError(f"resume=true, but {out_dir} was trained with another config; resuming would continue "
                            "the old run's schedule and state under new settings:\n  " + "\n  ".join(diff) +
                            "\nRerun with the saved values, pass allow_config_change=true to resume under the new "
                            "config anyway, or train into a new out_dir")
    k = 1 + sum(1 for _ in out_dir.glob("config.resume*.yaml"))
    OmegaConf.save(OmegaConf.create(cfg), out_dir / f"config.resume{k}.yaml")  # config.yaml stays the original
