"""Run a phased recipe (progressive shrinking) as consecutive trainer runs, one directory per phase.

Phase ``i`` lives in ``out_dir/<i>_<name>/``. A fresh phase loads the previous phase's final weights, then lets the
recipe prepare the model (OFA re-sorts channels at the start of each expand phase); a phase with a checkpoint
resumes from it; a phase whose ``done.json`` exists is never re-run. Phases that distil use a fixed teacher: the
largest subnet of the first phase's result, exported to a static module (OFA's trained full network).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.checkpoints import atomic_write, load_weights, save_weights
from nas.data import DataModule
from nas.train.distributed import LocalRun
from nas.train.samplers.base import PhasedSampler
from nas.train.trainer import CHECKPOINT, TrainConfig, Trainer, TrainResult
from supernets import Supernet

__all__ = ["PhasedResult", "train_phased", "phase_dirs"]

DONE = "done.json"


@dataclass
class PhasedResult:
    out_dir: Path
    phases: dict[str, TrainResult | None] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def evals(self) -> list[dict[str, Any]]:
        return [dict(row, phase=name) for name, r in self.phases.items() if r is not None for row in r.evals]


def phase_dirs(out_dir: str | Path, recipe: PhasedSampler) -> list[Path]:
    return [Path(out_dir) / f"{i}_{p.name}" for i, p in enumerate(recipe.phases())]


def _teacher(make_model: Callable[[], Supernet], first_dir: Path) -> Any:
    full = load_weights(make_model(), first_dir)
    return full.export(full.space.max_arch()).module.eval().requires_grad_(False)


def train_phased(make_model: Callable[[], Supernet], data: DataModule, recipe: PhasedSampler, config: TrainConfig,
                 out_dir: str | Path, *, resume: bool = False, dist: LocalRun | None = None) -> PhasedResult:
    """Train every phase in order (skipping finished ones on resume); returns the model of the last phase.

    With ``dist`` (a torchrun rank, :mod:`nas.train.distributed`) only rank 0 writes files.
    """
    dist = dist if dist is not None else LocalRun()
    start, out_dir = time.perf_counter(), Path(out_dir)
    result = PhasedResult(out_dir)
    dirs = phase_dirs(out_dir, recipe)
    model: Supernet | None = None
    for i, (phase, pdir) in enumerate(zip(recipe.phases(), dirs)):
        if resume and (pdir / DONE).exists():
            result.phases[phase.name] = None
            continue
        model = make_model()
        if not (resume and (pdir / CHECKPOINT).exists()) and i > 0:
            load_weights(model, dirs[i - 1])
            recipe.start_phase(i, model)
        teacher = _teacher(make_model, dirs[0]) if phase.sampler.needs_fixed_teacher else None
        cfg = replace(config, epochs=phase.epochs, lr=phase.lr if phase.lr is not None else config.lr,
                      warmup_epochs=phase.warmup_epochs if phase.warmup_epochs is not None else config.warmup_epochs,
                      seed=config.seed + i)
        res = Trainer(model, data, phase.sampler, cfg, pdir, teacher=teacher, dist=dist).fit(resume=resume)
        result.phases[phase.name] = res
        doc = {"phase": phase.name, "index": i, "steps": res.steps, "epochs": res.epochs, "seconds": res.seconds}
        if dist.is_main:
            atomic_write(pdir / DONE, lambda tmp, doc=doc: tmp.write_text(json.dumps(doc) + "\n"))
        dist.barrier()
    final = make_model()
    load_weights(final, dirs[-1])
    if dist.is_main:
        save_weights(out_dir, final, {"recipe": "phased", "phases": [p.name for p in recipe.phases()]})
    dist.barrier()
    result.seconds = time.perf_counter() - start
    return result
