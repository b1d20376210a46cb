"""Multi-process supernet training with torchrun and DistributedDataParallel (DDP).

``torchrun --nproc_per_node=N -m nas.train ...`` starts N processes; :func:`init_distributed` reads torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), joins the process group
(nccl on CUDA, gloo on CPU) and returns a :class:`DDPRun`; without torchrun (or with one process) it returns a
:class:`LocalRun` whose hooks are no-ops, so the trainer has one code path. What the hooks guarantee:

- **Same subnets on every rank.** Samplers draw from their own RNG seeded by the run seed, never the rank, and they
  observe the *global* batch (per-example losses, logits, labels and indices are all-gathered before ``observe``),
  so their state evolves identically; after each epoch rank 0's sampler state is broadcast as a safeguard (GPU
  evaluation is not bit-reproducible across devices).
- **Sharded data.** ``trainer.batch_size`` is the global batch: each step's examples (the epoch order is one seeded
  permutation, or PA&DA's importance-sampled indices and loss weights) are split into contiguous per-rank slices,
  like ``DistributedSampler`` but batch-aligned. Per-example loss weights are normalised by the global batch's
  weight sum, so the averaged gradient equals the single-process one.
- **One all-reduce per step.** The subnets of a step accumulate gradients under ``no_sync()``; only the last
  backward all-reduces. ``find_unused_parameters=True``: a subnet leaves blocks, kernel transforms and channel
  slices unused, and DDP's used-parameter map covers every backward of the ``no_sync`` session. A sampler reading
  gradients in ``observe`` sees the all-reduced gradient after the last task of a step, but only this rank's
  partial sums after earlier tasks (PA&DA plans one task per step, so its path importance is exact).
- **Batch norm.** With ``sync_bn`` (default) every BN of the supernet, elastic prefixes included, normalises with
  global-batch statistics (:mod:`nas.train.sync_bn`); otherwise each rank uses its local batch and DDP broadcasts
  rank 0's running statistics.
- **Randomness.** Augmentation and dropout are seeded by (seed, step, rank): ranks differ, resumes are exact.
- **Evaluation** at the end of an epoch runs on every rank (same weights, same images, local BN recalibration), so
  samplers that evaluate subnets (ShiftNAS) take the same decisions everywhere; only rank 0 logs it.
- **Checkpoints** are written by rank 0 only; every rank reads the same file on resume (``out_dir`` must be on a
  filesystem shared by all nodes), and they are resumable with any number of processes: they hold the global epoch
  order, batch position, and model/optimizer/sampler states, nothing per rank.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nas.train.plan import TaskResult
from nas.train.samplers.base import Sampler
from nas.train.sync_bn import convert_sync_bn, synchronised_bn
from search_spaces.errors import BadInputError


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BadInputError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:<index>") from None


__all__ = ["DistConfig", "DistributedError", "LocalRun", "DDPRun", "init_distributed", "distributed_run",
           "resolve_device", "torchrun_env", "NullLog"]

BACKENDS = ("auto", "gloo", "nccl")
# DDP's switch for syncing buffers at forward: ``forward_sync_buffers`` in current torch, ``broadcast_buffers``
# before it (torch 2.11, as on the CUDA machines the smoke check ran on)
_SYNC_BUFFERS = ("forward_sync_buffers"
                 if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                 else "broadcast_buffers")
M = TypeVar("M", bound=nn.Module)


class DistributedError(BadInputError):
    """Bad distributed settings, or ranks that disagree (e.g. resumed from different checkpoints)."""


@dataclass(frozen=True)
class DistConfig:
    """``distributed:`` block of ``conf/train.yaml``; used only when launched with more than one process."""

    backend: str = "auto"
    sync_bn: bool = True
    find_unused_parameters: bool = True
    timeout_s: float = 1800.0
    force: bool = False  # join the process group (DDP) even with one process, e.g. to check the nccl path

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise DistributedError(f"distributed.backend={self.backend!r} unknown; choose one of {list(BACKENDS)}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> DistConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise DistributedError(f"unknown distributed settings {unknown}; allowed: {sorted(known)}")
        return cls(**cfg)


def torchrun_env() -> dict[str, int] | None:
    """``rank``, ``world_size``, ``local_rank`` from torchrun's environment, or None when not launched by it."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return {"rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"]),
            "local_rank": int(os.environ.get("LOCAL_RANK", "0"))}


class NullLog:
    """Stands in for the metric logs on ranks other than 0."""

    def write(self, row: dict[str, Any]) -> None:
        """Discard the row."""

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "") -> None:
        """Discard the values."""

    def close(self) -> None:
        """Nothing to close."""


class LocalRun:
    """One process: every hook is the identity (the trainer's behaviour without torchrun)."""

    rank, world_size, local_rank = 0, 1, 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        return resolve_device(name)

    def prepare(self, model: M) -> M:
        """Model surgery before the model is moved and wrapped (synchronised BN)."""
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the trainer calls for training forwards."""
        return model

    def check_batch(self, batch_size: int) -> None:
        """Raise if the global batch cannot be split evenly over the processes."""

    def shard(self, n: int) -> slice:
        """This rank's positions within a global batch of ``n`` examples."""
        return slice(0, n)

    def weight_denominator(self, weights: np.ndarray | None) -> float | None:
        """Normaliser of weighted losses (None: the local batch's own weight sum)."""
        return None

    def step_seed(self, seed: int, step: int) -> int:
        """Seed of the step's augmentation generator (and, with several ranks, of dropout)."""
        return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])

    def accumulate(self, net: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Context of one task's forward and backward: gradients are synchronised only when ``last``."""
        return contextlib.nullcontext()

    def training(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Context of a step's training forwards (synchronised BN on)."""
        return contextlib.nullcontext()

    def observe(self, sampler: Sampler, result: TaskResult, model: nn.Module) -> None:
        sampler.observe(result, model)

    def mean_losses(self, losses: dict[str, float]) -> dict[str, float]:
        return losses

    def sync_sampler(self, sampler: Sampler) -> None:
        """Make every rank's sampler state rank 0's."""

    def agree(self, step: int, finished: bool) -> None:
        """Raise :class:`DistributedError` unless every rank is at the same point of training."""

    def barrier(self) -> None:
        """Wait for every rank (rank 0 finished writing files others will read)."""

    def close(self) -> None:
        """Leave the process group."""


class DDPRun(LocalRun):
    """Rank ``rank`` of ``world_size`` torchrun processes in an initialised default process group."""

    def __init__(self, config: DistConfig, *, rank: int, world_size: int, local_rank: int, device: str) -> None:
        self.config, self.rank, self.world_size, self.local_rank = config, rank, world_size, local_rank
        self._device = self._pick_device(device)
        backend = config.backend if config.backend != "auto" else ("nccl" if self._device.type == "cuda" else "gloo")
        if backend == "nccl" and self._device.type != "cuda":
            raise DistributedError(f"backend 'nccl' needs CUDA devices, but the trainer device is {self._device}; "
                                   f"use backend gloo or auto")
        self.backend = backend
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timedelta(seconds=config.timeout_s))
        if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
            raise DistributedError(f"process group is rank {dist.get_rank()} of {dist.get_world_size()}, but the "
                                   f"environment says rank {rank} of {world_size}")

    def _pick_device(self, name: str) -> torch.device:
        device = super().device(name)
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def device(self, name: str) -> torch.device:
        return self._device

    def prepare(self, model: M) -> M:
        if self.config.sync_bn:
            convert_sync_bn(model)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        ids = [self._device.index] if self._device.type == "cuda" else None
        # with synchronised BN the running statistics are identical on every rank: nothing to broadcast
        return DistributedDataParallel(model, device_ids=ids, **{_SYNC_BUFFERS: not self.config.sync_bn},
                                       find_unused_parameters=self.config.find_unused_parameters)

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise DistributedError(f"trainer.batch_size={batch_size} is the global batch and must be divisible by "
                                   f"the number of processes ({self.world_size})")

    def shard(self, n: int) -> slice:
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def weight_denominator(self, weights: np.ndarray | None) -> float | None:
        # DDP averages gradients over ranks, so rank losses sum_i w_i l_i / (W_total / world) average to the
        # global weighted mean sum_i w_i l_i / W_total
        return None if weights is None else max(float(weights.sum()), 1e-12) / self.world_size

    def step_seed(self, seed: int, step: int) -> int:
        s = int(np.random.SeedSequence([seed, step, self.rank]).generate_state(1)[0])
        torch.manual_seed(s)  # dropout: different masks per rank, reproducible on resume
        return s

    def accumulate(self, net: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        if last or not isinstance(net, DistributedDataParallel):
            return contextlib.nullcontext()
        return net.no_sync()

    def training(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return synchronised_bn(model, self.config.sync_bn)

    def observe(self, sampler: Sampler, result: TaskResult, model: nn.Module) -> None:
        if type(sampler).observe is Sampler.observe:
            return  # the sampler ignores results: skip the all-gather
        sampler.observe(self._gather(result), model)

    def _gather(self, r: TaskResult) -> TaskResult:
        def cat(t: torch.Tensor) -> torch.Tensor:
            t = t.contiguous()
            parts = [torch.empty_like(t) for _ in range(self.world_size)]
            dist.all_gather(parts, t)
            return torch.cat(parts)

        loss = torch.tensor([r.loss], dtype=torch.float64, device=self._device)
        dist.all_reduce(loss)
        return replace(r, loss=float(loss) / self.world_size, per_example=cat(r.per_example), logits=cat(r.logits),
                       targets=cat(r.targets), index=cat(r.index))

    def mean_losses(self, losses: dict[str, float]) -> dict[str, float]:
        keys = sorted(losses)
        t = torch.tensor([losses[k] for k in keys], dtype=torch.float64, device=self._device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def sync_sampler(self, sampler: Sampler) -> None:
        box = [sampler.state_dict() if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._device if self.backend == "nccl" else None)
        if not self.is_main and box[0] is not None:
            sampler.load_state_dict(box[0])

    def agree(self, step: int, finished: bool) -> None:
        mine = torch.tensor([step, int(finished)], dtype=torch.int64, device=self._device)
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine)
        seen = [tuple(p.tolist()) for p in parts]
        if len(set(seen)) > 1:
            raise DistributedError(f"ranks are at different (step, finished) points {seen}: each rank read its own "
                                   f"out_dir; put out_dir on a filesystem shared by all nodes")

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(config: Mapping[str, Any] | DistConfig | None = None, *, device: str = "auto") -> LocalRun:
    """:class:`DDPRun` under torchrun with more than one process (or with ``force``), else :class:`LocalRun`."""
    cfg = config if isinstance(config, DistConfig) else DistConfig.from_mapping(config)
    env = torchrun_env()
    if env is None or (env["world_size"] <= 1 and not cfg.force):
        return LocalRun()
    return DDPRun(cfg, device=device, **env)


@contextlib.contextmanager
def distributed_run(config: Mapping[str, Any] | DistConfig | None = None, *,
                    device: str = "auto") -> Iterator[LocalRun]:
    """:func:`init_distributed` that leaves the process group on exit."""
    run = init_distributed(config, device=device)
    try:
        yield run
    finally:
        run.close()
