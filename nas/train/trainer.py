"""The one supernet trainer: a sampler's step plan per batch, gradients accumulated over its subnets, one step.

Everything recipe-specific (which subnets, which losses, which teacher, which examples) comes from the sampler
(:mod:`nas.train.samplers`); the trainer only executes plans: it resizes the batch to each subnet's resolution,
computes each task's loss (hard labels, in-place teacher logits from an earlier task, or a fixed teacher network),
back-propagates it scaled by the task weight, and steps once. Runs are device-agnostic (AMP on CUDA only),
report a tqdm bar (loss, lr, images/s) and metrics CSVs (plus TensorBoard when installed), and write atomic
checkpoints that resume to bit-identical weights: the example order of the epoch, every RNG state and the
sampler state are saved, and augmentation is seeded per step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nas.checkpoints import check_spec, load_checkpoint, rng_state, save_checkpoint, save_weights, set_rng_state
from nas.checks import as_float, as_int
from nas.data import Batch, DataModule
from nas.evaluation import EvalSet, evaluate_subnets
from nas.train.distributed import LocalRun, NullLog, resolve_device
from nas.train.init import dropout_rates, set_dropout
from nas.train.losses import weighted_mean
from nas.train.metrics import CSVLog, TensorBoardLog
from nas.train.plan import StepPlan, TaskResult
from nas.train.resize import arch_resolution, resize_to
from nas.train.samplers.base import EpochData, Sampler
from nas.train.schedule import create_schedule, make_optimizer
from search_spaces.errors import BadInputError
from supernets import Supernet

__all__ = ["TrainConfig", "TrainResult", "Trainer", "resolve_device", "NonFiniteLossError"]

CHECKPOINT = "checkpoint.pt"
# autocast dtypes on CUDA: float16 needs loss scaling (GradScaler); bfloat16 has float32's range and needs none
AMP_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class NonFiniteLossError(BadInputError, FloatingPointError):
    """A task's loss became NaN/inf; the message names the step and subnet."""


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings of one training run (``conf/trainer/*.yaml``)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 3e-5
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    end_ratio: float = 0.05
    end_at: float = 0.66
    grad_clip: float | None = None
    dropout: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "float16"
    channels_last: bool = True
    threads: int | None = None
    max_steps_per_epoch: int | None = None
    checkpoint_every: int = 0
    log_every: int = 10
    eval_every: int = 1
    eval_images: int = 1000
    calib_images: int = 500
    calib_batch: int = 250
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        """Every field checked against its type and range; the message names ``trainer.<field>``."""
        for f in fields(self):
            value, key, kind = getattr(self, f.name), f"trainer.{f.name}", str(f.type)
            if value is None and "None" in kind:
                continue
            if kind.startswith("int"):
                setattr(self, f.name, as_int(value, key, minimum=_INT_MIN.get(f.name, 0)))
            elif kind.startswith("float"):
                setattr(self, f.name, as_float(value, key, minimum=None if f.name == "lr" else 0.0))
            elif kind == "bool" and not isinstance(value, bool):
                raise BadInputError(f"{key} must be true or false, got {value!r}")
        if self.lr <= 0:
            raise BadInputError(f"trainer.lr must be a number > 0, got {self.lr!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise BadInputError(f"trainer.grad_clip must be null or a number > 0, got {self.grad_clip!r}")
        if self.dropout is not None and not self.dropout < 1:
            raise BadInputError(f"trainer.dropout must be null or a number in [0, 1), got {self.dropout!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise BadInputError(f"trainer.amp_dtype={self.amp_dtype!r} is not allowed; choose one of "
                                f"{sorted(AMP_DTYPES)}")


#: smallest allowed value of the integer settings (others: 0)
_INT_MIN = {"epochs": 1, "batch_size": 1, "threads": 1, "max_steps_per_epoch": 1, "log_every": 1, "calib_batch": 1}


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    epochs: int
    seconds: float
    evals: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None


class Trainer:
    """Train ``model`` on ``data`` with the plans of ``sampler``; state and logs live in ``out_dir``."""

    def __init__(self, model: Supernet, data: DataModule, sampler: Sampler, config: TrainConfig, out_dir: str | Path,
                 *, teacher: nn.Module | None = None, dist: LocalRun | None = None) -> None:
        if sampler.needs_fixed_teacher and teacher is None:
            raise ValueError(f"{type(sampler).__name__} distils from a fixed teacher, but no teacher was given")
        self.cfg, self.data, self.sampler, self.out_dir = config, data, sampler, Path(out_dir)
        # dist: this process's rank under torchrun (nas.train.distributed); LocalRun = single process
        self.dist = dist if dist is not None else LocalRun()
        self.dist.check_batch(config.batch_size)
        self.device = self.dist.device(config.device)
        self.model = model.to(self.device)
        self.net = self.dist.wrap(self.model)  # what training forwards call (DDP under torchrun)
        self._denominator: float | None = None
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self.rates = dropout_rates(model) if config.dropout is None else {
            k: float(config.dropout) for k in dropout_rates(model)}
        n = data.split_size("train")
        self.steps_per_epoch = min(n // config.batch_size, config.max_steps_per_epoch or n)
        if self.steps_per_epoch < 1:
            raise ValueError(f"training split has {n} examples, fewer than one batch of {config.batch_size}")
        self.total_steps = self.steps_per_epoch * config.epochs
        bind = getattr(sampler, "bind", None)  # samplers that need the run length or data (DεpS, SuperTickets)
        if callable(bind):
            bind(self.model, steps_per_epoch=self.steps_per_epoch, epochs=config.epochs, data=data)
        self.optimizer = make_optimizer(model, name=config.optimizer, lr=config.lr,
                                        weight_decay=config.weight_decay, momentum=config.momentum)
        self.scheduler = create_schedule(
            config.schedule, self.optimizer, total_steps=self.total_steps,
            warmup_steps=int(round(config.warmup_epochs * self.steps_per_epoch)), warmup_lr=config.warmup_lr,
            min_lr=config.min_lr, end_ratio=config.end_ratio, end_at=config.end_at)
        amp = config.amp and self.device.type == "cuda"
        dtype = AMP_DTYPES[config.amp_dtype]
        self.scaler = torch.amp.GradScaler("cuda") if amp and dtype == torch.float16 else None
        self.autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if amp else contextlib.nullcontext
        self.epoch = self.batch = self.step = 0
        self.epoch_data: EpochData | None = None
        self._evalset: EvalSet | None = None

    # -- state ------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def state_dict(self, finished: bool = False) -> dict[str, Any]:
        ed = self.epoch_data
        return {
            "spec": self.model.full_spec(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None, "rng": rng_state(),
            "epoch": self.epoch, "batch": self.batch, "step": self.step, "finished": finished,
            "epoch_data": None if ed is None else {
                "indices": torch.from_numpy(ed.indices),
                "weights": None if ed.weights is None else torch.from_numpy(ed.weights)},
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_spec(self.model.full_spec(), state["spec"], str(self.checkpoint_path))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch, self.step = int(state["epoch"]), int(state["batch"]), int(state["step"])
        ed = state["epoch_data"]
        self.epoch_data = None if ed is None else EpochData(
            ed["indices"].numpy(), None if ed["weights"] is None else ed["weights"].numpy())
        set_rng_state(state["rng"])

    def save(self, finished: bool = False) -> Path:
        if not self.dist.is_main:
            return self.checkpoint_path
        return save_checkpoint(self.checkpoint_path, self.state_dict(finished))

    # -- evaluation (also the sampler's TrainContext) ---------------------------------------------
    def evaluate(self, archs: Sequence[Any], split: str = "val") -> list[dict[str, Any]]:
        if self._evalset is None or self._evalset.split != split:
            self._evalset = EvalSet(self.data, split=split, n_images=self.cfg.eval_images,
                                    calib_images=self.cfg.calib_images, calib_batch=self.cfg.calib_batch,
                                    seed=self.cfg.seed, device=self.device, channels_last=self.cfg.channels_last)
        return evaluate_subnets(self.model, archs, self._evalset)

    def eval_archs(self) -> dict[str, Any]:
        choices = getattr(self.sampler, "choices", None)
        src = choices if choices is not None else self.model.space
        return {"max": src.max_arch(), "min": src.min_arch()}

    # -- training ---------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train to the configured number of epochs; with ``resume`` continue from ``checkpoint.pt`` if present."""
        start, resumed = time.perf_counter(), None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        finished = False
        if resume and self.checkpoint_path.exists():
            state = load_checkpoint(self.checkpoint_path, "cpu")  # numpy and RNG state must be CPU tensors
            self.load_state_dict(state)
            resumed, finished = self.step, bool(state["finished"])
        else:
            torch.manual_seed(self.cfg.seed)
            self.sampler.setup(self.model)
        self.dist.agree(self.step, finished)
        if finished:
            return TrainResult(self.out_dir, self.step, self.epoch, 0.0, resumed_from_step=resumed)
        self.scheduler.step_update(self.step)
        self._open_logs(resumed)
        evals: list[dict[str, Any]] = []
        try:
            while self.epoch < self.cfg.epochs:
                self._run_epoch()
                evals += self._end_epoch()
            if self.dist.is_main:
                save_weights(self.out_dir, self.model, {"steps": self.step, "epochs": self.epoch,
                                                       "config": asdict(self.cfg)})
            self.save(finished=True)
        finally:
            self.tb.close()
        self.dist.barrier()
        return TrainResult(self.out_dir, self.step, self.epoch, time.perf_counter() - start, evals, resumed)

    def _open_logs(self, resumed: int | None) -> None:
        if not self.dist.is_main:
            self.log = self.eval_log = cast(CSVLog, NullLog())  # other ranks log nothing
            self.tb = cast(TensorBoardLog, NullLog())
            return
        tags = [f"loss_{t}" for t in self.sampler.tags]
        self.log = CSVLog(self.out_dir / "metrics.csv", ["epoch", "step", "lr", "loss", *tags, "img_s", "elapsed_s"],
                          keep_until_step=resumed)
        self.eval_log = CSVLog(self.out_dir / "eval.csv", ["epoch", "step", "subnet", "arch_id", "top1", "loss"],
                               keep_until_step=resumed)
        self.tb = TensorBoardLog(self.out_dir / "tb", self.cfg.tensorboard)

    def _run_epoch(self) -> None:
        cfg, spe = self.cfg, self.steps_per_epoch
        if self.epoch_data is None:
            self.epoch_data = self.sampler.epoch_data(self.epoch, self.data.split_size("train"), cfg.seed)
            if len(self.epoch_data.indices) < spe * cfg.batch_size:
                raise ValueError(f"epoch_data gave {len(self.epoch_data.indices)} examples; the schedule needs "
                                 f"{spe} batches of {cfg.batch_size}")
        self.model.train()
        bar = tqdm(total=spe, initial=self.batch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", dynamic_ncols=True,
                   disable=not (cfg.progress and self.dist.is_main), leave=False)
        window: dict[str, list[float]] = {}
        t_log = time.perf_counter()
        while self.batch < spe:
            losses = self._train_step(self._batch(self.batch))
            self.batch += 1
            for k, v in losses.items():
                window.setdefault(k, []).append(v)
            lr = self.optimizer.param_groups[0]["lr"]
            if self.step % cfg.log_every == 0 or self.batch == spe:
                now = time.perf_counter()
                n_steps = len(window["loss"])
                row = {k: float(np.mean(v)) for k, v in window.items()}
                row |= {"epoch": self.epoch, "step": self.step, "lr": lr,
                        "img_s": n_steps * cfg.batch_size / max(now - t_log, 1e-9), "elapsed_s": now - t_log}
                self.log.write(row)
                self.tb.scalars(self.step, row, "train/")
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.3g}", img_s=f"{row['img_s']:.0f}")
                window, t_log = {}, now
            bar.update(1)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.batch < spe:
                self.save()
        bar.close()

    def _batch(self, b: int) -> Batch:
        ed, bs = self.epoch_data, self.cfg.batch_size
        assert ed is not None
        part, mine = slice(b * bs, (b + 1) * bs), self.dist.shard(bs)  # mine: this rank's share of the batch
        weights = None if ed.weights is None else ed.weights[part]
        self._denominator = self.dist.weight_denominator(weights)
        idx = ed.indices[part][mine]
        x, y = self.data.get("train", idx)
        gen = torch.Generator().manual_seed(self.dist.step_seed(self.cfg.seed, self.step))
        w = None if weights is None else torch.from_numpy(weights[mine])
        return Batch(self.data.augment(x, gen), y, torch.from_numpy(idx), w).to(self.device)

    def _train_step(self, batch: Batch) -> dict[str, float]:
        plan: StepPlan = self.sampler.plan(self.step, batch)
        self.optimizer.zero_grad(set_to_none=True)
        resized: dict[int, torch.Tensor] = {}
        fixed: dict[int, torch.Tensor] = {}
        inplace: torch.Tensor | None = None
        per_tag: dict[str, list[float]] = {}
        total = 0.0
        for i, task in enumerate(plan):
            self.model.set_arch(task.arch)
            set_dropout(self.model, self.rates if task.regularize else 0.0)
            size = arch_resolution(self.model.space, task.arch, self.data.image_size)
            if size not in resized:
                resized[size] = resize_to(batch.x, size, channels_last=self.cfg.channels_last)
            # gradients are all-reduced only by the last task's backward (no_sync before); BN may sync over ranks
            with self.autocast(), self.dist.accumulate(self.net, i == len(plan) - 1), self.dist.training(self.model):
                logits = self.net(resized[size])
            target = inplace if task.recipe.needs_inplace_teacher else (
                self._teacher_logits(fixed, size, resized[size]) if task.recipe.needs_fixed_teacher else None)
            per_example = task.recipe.per_example(logits, batch.y, target)
            loss = weighted_mean(per_example, batch.weight, self._denominator) * task.weight
            value = float(loss.detach())
            if not np.isfinite(value):
                raise NonFiniteLossError(f"loss of subnet {task.tag} ({task.arch.id}) is {value} at step "
                                         f"{self.step}; lower the lr or enable grad_clip")
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            if task.teacher:
                inplace = logits.detach()
            self.dist.observe(self.sampler, TaskResult(task, value, per_example.detach(), logits.detach(), batch.y,
                                                       batch.index), self.model)
            per_tag.setdefault(task.tag, []).append(value)
            total += value
        set_dropout(self.model, self.rates)
        self.sampler.on_step_end(self.step, self.model)
        self._optimizer_step()
        self.step += 1
        self.scheduler.step_update(self.step)
        out = {f"loss_{t}": float(np.mean(v)) for t, v in per_tag.items() if t in self.sampler.tags}
        return self.dist.mean_losses(out | {"loss": total})

    @torch.no_grad()
    def _teacher_logits(self, cache: dict[int, torch.Tensor], size: int, x: torch.Tensor) -> torch.Tensor:
        if size not in cache:
            assert self.teacher is not None
            with self.autocast():
                cache[size] = self.teacher(x).float()
        return cache[size]

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            if self.cfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()

    def _end_epoch(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        last = self.epoch + 1 == self.cfg.epochs
        if self.cfg.eval_every and ((self.epoch + 1) % self.cfg.eval_every == 0 or last):
            named = self.eval_archs()
            for tag, res in zip(named, self.evaluate(list(named.values()))):
                row = {"epoch": self.epoch, "step": self.step, "subnet": tag, "arch_id": res["arch_id"],
                       "top1": res["top1"], "loss": res["loss"]}
                self.eval_log.write(row)
                self.tb.scalars(self.step, {f"{tag}_top1": res["top1"]}, "val/")
                rows.append(row)
            if self.cfg.progress and self.dist.is_main:
                tqdm.write(f"epoch {self.epoch + 1}: " + ", ".join(f"{r['subnet']} {r['top1']:.2f}%" for r in rows))
        self.sampler.on_epoch_end(self.epoch, self)
        self.dist.sync_sampler(self.sampler)
        self.epoch, self.batch, self.epoch_data = self.epoch + 1, 0, None
        self.save()
        return rows
