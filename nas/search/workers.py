"""Parallel search workers: many processes (on one or many machines) share one Optuna study.

Each worker runs Optuna's ``study.optimize`` (Akiba et al., KDD 2019; "distributed optimization" with a shared
storage) over the space's genes (categorical choice indices, the same parameters as
:class:`nas.search.searchers.OptunaSearcher`) and evaluates the proposed subnets for real, e.g. with
:class:`SupernetEvaluator` (BN-recalibrated accuracy of a trained supernet through :mod:`nas.evaluate`). The
storage is an RDB URL (PostgreSQL for many machines) or a journal file (:mod:`nas.search.worker_storage`).

Guarantees, with every worker following this protocol:

- **No architecture evaluated twice.** Before evaluating, a trial claims its canonical architecture id atomically;
  a trial whose architecture is already claimed by a running or finished trial is PRUNED with user attribute
  ``duplicate_of`` (the owner's trial number) instead of being evaluated.
- **No trial lost when a worker dies.** Running trials send heartbeats; a stale trial is marked FAIL by another
  worker and re-queued with the same parameters (``RetryHeartbeatStaleTrialCallback``); its retry takes the claim
  over. Workers that reach the budget keep draining until no trial is left waiting or running, so the retries of
  dead workers' trials are evaluated even when the budget was met meanwhile.
- **Budget.** ``n_trials`` counts COMPLETE trials (distinct evaluated architectures) over the whole study; up to
  ``workers - 1`` more may complete when several workers pass the budget check at the same moment, plus retries.
Every trial ends COMPLETE (user attributes ``arch_id``, ``x``, ``metrics``, ``worker``), PRUNED (``duplicate_of``
or ``skipped=budget``) or FAIL (stale, then retried; or an evaluation error, which stops that worker).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState

from nas.checks import as_int, as_mapping, one_of
from nas.search.worker_storage import ClaimStore, claims_for, open_worker_storage
from search_spaces.base import SearchSpace
from search_spaces.errors import BadInputError, CorruptFileError

__all__ = ["run_worker", "worker_from_config", "WorkerResult", "SupernetEvaluator", "EvaluateFn", "study_summary",
           "DEAD_STATES", "worker_objectives"]

log = logging.getLogger("nas.search.workers")
EvaluateFn = Callable[[Any], Mapping[str, float]]
#: a claim held by a trial in one of these states may be taken over
DEAD_STATES = (TrialState.FAIL, TrialState.PRUNED)
DIRECTIONS = {"min": StudyDirection.MINIMIZE, "max": StudyDirection.MAXIMIZE, "minimize": StudyDirection.MINIMIZE,
              "maximize": StudyDirection.MAXIMIZE}


@dataclass
class WorkerResult:
    """What one worker did: trial numbers it evaluated, pruned as duplicates, and ran as retries."""

    worker: str
    study_name: str
    evaluated: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    stop_reason: str = ""
    seconds: float = 0.0


def _make_sampler(sampler: str | BaseSampler, seed: int, kwargs: Mapping[str, Any] | None) -> BaseSampler:
    if isinstance(sampler, BaseSampler):
        return sampler
    from nas.search.searchers.optuna_backend import OPTUNA_SAMPLERS

    return OPTUNA_SAMPLERS.create(sampler, seed=seed, **dict(kwargs or {}))


def _directions(objectives: Mapping[str, str]) -> list[StudyDirection]:
    if not objectives:
        raise BadInputError("objectives must name at least one metric, e.g. {'top1': 'max', 'macs_M': 'min'}")
    bad = {k: v for k, v in objectives.items() if v not in DIRECTIONS}
    if bad:
        raise BadInputError(f"objective directions {bad} invalid; use one of {sorted(DIRECTIONS)}")
    return [DIRECTIONS[v] for v in objectives.values()]


class _Worker:
    def __init__(self, study: optuna.Study, claims: ClaimStore, space: SearchSpace, evaluate_fn: EvaluateFn,
                 objectives: Mapping[str, str], n_trials: int, result: WorkerResult, max_duplicates: int) -> None:
        self.study, self.claims, self.space, self.evaluate_fn = study, claims, space, evaluate_fn
        self.objectives, self.n_trials, self.result = dict(objectives), n_trials, result
        self.genes = space.genes()
        self.max_duplicates, self.run_of_duplicates = max_duplicates, 0
        self.halted = False
        self.cardinality = int(space.cardinality())

    def n_complete(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def objective(self, trial: Trial) -> list[float]:
        x = np.array([trial.suggest_categorical(g.name, list(range(len(g.choices)))) for g in self.genes],
                     dtype=np.int64)
        arch = self.space.decode(x)
        arch_id = str(self.space.arch_id(arch))
        retry = "failed_trial" in self.study._storage.get_trial(trial._trial_id).system_attrs
        trial.set_user_attr("arch_id", arch_id)
        trial.set_user_attr("x", [int(v) for v in self.space.encode(arch)])
        trial.set_user_attr("worker", self.result.worker)
        owner = self._acquire(arch_id, trial._trial_id)
        if owner is not None:
            trial.set_user_attr("duplicate_of", owner.number)
            self.result.duplicates.append(trial.number)
            raise optuna.TrialPruned(f"architecture {arch_id} is trial {owner.number}'s ({owner.state.name})")
        if not retry and self.n_complete() >= self.n_trials:
            trial.set_user_attr("skipped", "budget")
            raise optuna.TrialPruned(f"the study has {self.n_trials} complete trials")
        metrics = {k: float(v) for k, v in self.evaluate_fn(arch).items()}
        missing = [k for k in self.objectives if k not in metrics or not np.isfinite(metrics[k])]
        if missing:
            raise ValueError(f"evaluate_fn returned no finite value for objectives {missing}; got {metrics}")
        trial.set_user_attr("metrics", metrics)
        self.result.evaluated.append(trial.number)
        if retry:
            self.result.retried.append(trial.number)
        return [metrics[k] for k in self.objectives]

    def _acquire(self, arch_id: str, trial_id: int) -> FrozenTrial | None:
        """None when this trial now owns ``arch_id``; else the live or finished trial that owns it."""
        name, storage = self.study.study_name, self.study._storage
        owner_id = self.claims.claim(name, arch_id, trial_id)
        while owner_id != trial_id:
            owner = storage.get_trial(owner_id)
            if owner.state not in DEAD_STATES:
                return owner
            if self.claims.takeover(name, arch_id, owner_id, trial_id):
                return None
            owner_id = self.claims.claim(name, arch_id, trial_id)
        return None

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        dup = trial.state == TrialState.PRUNED and "duplicate_of" in trial.user_attrs
        self.run_of_duplicates = self.run_of_duplicates + 1 if dup else 0
        if self.n_complete() >= self.n_trials:
            self._stop(study, "budget")
        elif self.run_of_duplicates >= self.max_duplicates:
            self._stop(study, f"{self.max_duplicates} duplicate proposals in a row", halt=True)
        elif self.claims.count(study.study_name) >= self.cardinality:
            self._stop(study, "space exhausted", halt=True)

    def _stop(self, study: optuna.Study, reason: str, halt: bool = False) -> None:
        self.result.stop_reason, self.halted = reason, halt
        study.stop()


def run_worker(study_name: str, storage_url: str, space: SearchSpace, evaluate_fn: EvaluateFn, n_trials: int, *,
               objectives: Mapping[str, str], sampler: str | BaseSampler = "tpe",
               sampler_kwargs: Mapping[str, Any] | None = None, seed: int = 0, worker_id: str | None = None,
               heartbeat_interval: int = 10, grace_period: int | None = None, max_retry: int | None = 3,
               max_duplicates: int = 200, timeout: float | None = None, poll_s: float = 0.5) -> WorkerResult:
    """Evaluate trials of the shared study ``study_name`` in ``storage_url`` until it has ``n_trials`` complete.

    ``evaluate_fn(arch)`` returns a metric dict holding at least the ``objectives`` (``{name: "max"|"min"}``, in
    order); the sampler (an ``OPTUNA_SAMPLERS`` name or an Optuna sampler) is seeded from (``seed``,
    ``worker_id``). Start any number of workers with the same study, storage, space and objectives.
    """
    if n_trials < 1:
        raise BadInputError(f"n_trials must be >= 1, got {n_trials}")
    start = time.perf_counter()
    worker = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    storage = open_worker_storage(storage_url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                  max_retry=max_retry)
    wseed = int(np.random.SeedSequence([seed, zlib.crc32(worker.encode())]).generate_state(1)[0])
    study = optuna.create_study(storage=storage, study_name=study_name, directions=_directions(objectives),
                                sampler=_make_sampler(sampler, wseed, sampler_kwargs), load_if_exists=True)
    _check_signature(study, space, objectives)
    result = WorkerResult(worker, study_name)
    w = _Worker(study, claims_for(storage, storage_url), space, evaluate_fn, objectives, n_trials, result,
                max_duplicates)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not w.halted:
        if deadline is not None and time.monotonic() >= deadline:
            result.stop_reason = "timeout"
            break
        if w.n_complete() < n_trials or _waiting(study):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            study.optimize(w.objective, callbacks=[w.after_trial], timeout=left, catch=())
            continue
        if not _running(study):
            result.stop_reason = "budget"
            break
        # budget met, but trials are running: either live workers finish them, or they go stale and are retried
        time.sleep(poll_s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    result.seconds = time.perf_counter() - start
    log.info("worker %s: %d evaluated, %d duplicates, %d retries (%s)", worker, len(result.evaluated),
             len(result.duplicates), len(result.retried), result.stop_reason)
    return result


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _check_signature(study: optuna.Study, space: SearchSpace, objectives: Mapping[str, str]) -> None:
    signature = {"space": space.name, "genes": [g.name for g in space.genes()], "objectives": dict(objectives)}
    stored = study.user_attrs.get("worker_signature")
    if stored is None:
        study.set_user_attr("worker_signature", signature)
    elif stored != signature:
        raise CorruptFileError(f"study {study.study_name!r} belongs to another search {stored}; this worker runs "
                               f"{signature}. Use another study name or storage.")


def study_summary(study: optuna.Study) -> dict[str, Any]:
    """Counts per state, evaluated arch ids (in trial order), duplicates, retries and leftovers of a study."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return {
        "states": {s.name: sum(t.state == s for t in trials) for s in TrialState},
        "evaluated": [t.user_attrs["arch_id"] for t in complete],
        "duplicates": {t.number: t.user_attrs["duplicate_of"] for t in trials if "duplicate_of" in t.user_attrs},
        "retries": {t.number: t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs},
        "workers": sorted({t.user_attrs.get("worker", "") for t in complete}),
    }


#: the metrics :class:`SupernetEvaluator` returns, and the default objectives of ``python -m nas.search_worker``
EVALUATOR_METRICS = ("top1", "loss", "macs_M", "params_M")
DEFAULT_OBJECTIVES = {"top1": "max", "macs_M": "min"}


class SupernetEvaluator:
    """``evaluate_fn`` of a trained supernet: BN-recalibrated top-1 and loss (:mod:`nas.evaluate`), MACs, params.

    Metrics: ``top1`` (%), ``loss``, ``macs_M`` and ``params_M`` (millions). The supernet and the calibration and
    evaluation images are loaded once per worker.
    """

    def __init__(self, checkpoint: str | Path, data: Any, *, split: str = "val", n_images: int | None = 1000,
                 calib_images: int = 500, calib_batch: int = 250, batch_size: int = 500, seed: int = 0,
                 device: str = "cpu") -> None:
        from nas.evaluate import EvalSet
        from nas.resolve import load_trained_supernet

        self.model = load_trained_supernet(checkpoint).to(device)
        self.evalset = EvalSet(data, split=split, n_images=n_images, calib_images=calib_images,
                               calib_batch=calib_batch, seed=seed, batch_size=batch_size, device=device)

    @property
    def space(self) -> SearchSpace:
        return self.model.space

    def __call__(self, arch: Any) -> dict[str, float]:
        from nas.evaluate import evaluate_subnets

        row = evaluate_subnets(self.model, [arch], self.evalset)[0]
        return {"top1": float(row["top1"]), "loss": float(row["loss"]), "macs_M": row["macs"] / 1e6,
                "params_M": row["params"] / 1e6}


def worker_objectives(value: Any) -> dict[str, str]:
    """The ``objectives`` of a worker config exactly as given (null = top-1 against MACs), each a known metric."""
    if value is None:
        return dict(DEFAULT_OBJECTIVES)
    objectives = as_mapping(value, "objectives", example="{top1: max, params_M: min}")
    for name, direction in objectives.items():
        one_of(name, "objectives key", EVALUATOR_METRICS)
        one_of(direction, f"objectives.{name}", ["max", "min"])
    return {str(k): str(v) for k, v in objectives.items()}


def worker_from_config(cfg: Mapping[str, Any]) -> WorkerResult:
    """Library entry of ``python -m nas.search_worker`` (a resolved ``conf/search_worker.yaml``)."""

    from nas.train.run import build_data

    ints = {k: as_int(cfg[k], k, minimum=0 if k == "seed" else 1)
            for k in ("n_trials", "seed", "heartbeat_interval", "max_duplicates")}
    objectives = worker_objectives(cfg.get("objectives"))
    evaluator = SupernetEvaluator(cfg["checkpoint"], build_data(cfg["data"]), seed=ints["seed"],
                                  device=str(cfg["device"]), **dict(cfg["eval"]))
    return run_worker(str(cfg["study"]), str(cfg["storage"]), evaluator.space, evaluator, ints["n_trials"],
                      objectives=objectives, sampler=str(cfg["sampler"]),
                      sampler_kwargs=dict(cfg.get("sampler_kwargs") or {}), seed=ints["seed"],
                      worker_id=cfg.get("worker_id"), heartbeat_interval=ints["heartbeat_interval"],
                      grace_period=cfg.get("grace_period"), max_retry=cfg.get("max_retry"),
                      max_duplicates=ints["max_duplicates"], timeout=cfg.get("timeout"))
