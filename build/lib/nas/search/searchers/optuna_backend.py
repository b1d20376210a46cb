"""Optuna backends (Akiba et al., KDD 2019): TPE (multivariate) and NSGA-II samplers through ``study.ask/tell``.

Each gene becomes a ``CategoricalDistribution`` over its choice *indices* (the space's encoding), so the sampler
sees exactly the space's decisions. The study lives in an Optuna storage (an SQLite file in the results directory
by default; a journal file, or any RDB URL shared by many workers), which is also the resume mechanism: on restart
the study is loaded, completed trials refill the evaluation cache, and trials that were running when the process
died are evaluated first. To make a resumed study end where an uninterrupted one would, the sampler is rebuilt for
every trial with a seed derived from (searcher seed, trial number); its proposals are then a function of the
stored trials alone, not of in-process random state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState

from nas.registry import Registry
from nas.search.problem import Evaluation
from nas.search.searchers.base import SEARCHERS, Searcher

__all__ = ["OptunaSearcher", "StorageError", "open_storage", "OPTUNA_SAMPLERS", "TrialSeededSampler"]


class StorageError(ValueError):
    """An Optuna storage URL could not be opened."""


STORAGE_FORMS = ("'memory'", "'sqlite:///path/study.db'", "any SQLAlchemy RDB URL (postgresql://..., mysql://...)",
                 "'journal:///path/study.log' or a path ending in .log (JournalStorage file)")


def open_storage(url: str | None) -> BaseStorage:
    """Open ``url`` as an Optuna storage; failures raise :class:`StorageError` naming the accepted forms."""
    if url is None or url in ("memory", ":memory:"):
        return InMemoryStorage()
    if not isinstance(url, str):
        raise StorageError(f"storage must be a URL string, got {type(url).__name__}; accepted: {STORAGE_FORMS}")
    journal = url[len("journal://"):] if url.startswith("journal://") else url if url.endswith(".log") else None
    try:
        if journal is not None:
            if not Path(journal).parent.is_dir():
                raise FileNotFoundError(f"directory {Path(journal).parent} does not exist")
            return JournalStorage(JournalFileBackend(journal))
        return RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - every backend failure becomes one clear, typed error
        raise StorageError(f"cannot open Optuna storage {url!r}: {type(exc).__name__}: {exc}. "
                           f"Accepted forms: {', '.join(STORAGE_FORMS)}") from exc


OPTUNA_SAMPLERS: Registry[BaseSampler] = Registry("optuna sampler")
OPTUNA_SAMPLERS.add("tpe", lambda seed, **kw: TPESampler(seed=seed, **{"multivariate": True, **kw}))
OPTUNA_SAMPLERS.add("nsga2", lambda seed, **kw: NSGAIISampler(seed=seed, **kw))
OPTUNA_SAMPLERS.add("random", lambda seed, **kw: RandomSampler(seed=seed, **kw))


class TrialSeededSampler(BaseSampler):
    """Delegates to ``factory(seed_of(trial))``, a fresh sampler per trial: proposals depend on stored trials only.

    With ``search_space`` (the fixed distributions every trial is asked with) the relative search space is that
    dict, instead of each fresh sampler intersecting the distributions of all past trials again (quadratic cost).
    """

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int,
                 search_space: dict[str, BaseDistribution] | None = None) -> None:
        self._factory, self._seed, self._space = factory, seed, search_space
        self._current: tuple[int, BaseSampler] | None = None

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if self._current is None or self._current[0] != trial.number:
            seed = int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0])
            self._current = (trial.number, self._factory(seed))
        return self._current[1]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self._space is not None:
            return dict(self._space)
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)


class OptunaSearcher(Searcher):
    """Ask/tell over an Optuna study; ``storage=None`` means an SQLite file in the run directory (if any)."""

    persistent = True

    def __init__(self, sampler: str, *, storage: str | None = None, study_name: str = "nas_search",
                 batch_size: int = 1, sampler_kwargs: dict[str, Any] | None = None) -> None:
        OPTUNA_SAMPLERS.get(sampler)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler_name, self.storage_url, self.study_name = sampler, storage, study_name
        self.batch_size, self.sampler_kwargs = batch_size, dict(sampler_kwargs or {})

    def _setup(self) -> None:
        url = self.storage_url
        if url is None and self.workdir is not None:
            url = f"sqlite:///{(self.workdir / 'optuna.db').resolve()}"
        storage = open_storage(url)
        p = self.problem
        self.distributions = {g.name: CategoricalDistribution(list(range(len(g.choices)))) for g in p.space.genes()}
        sampler = TrialSeededSampler(lambda s: OPTUNA_SAMPLERS.create(self.sampler_name, seed=s,
                                                                      **self.sampler_kwargs), self.seed,
                                     search_space=self.distributions)
        directions = ["minimize" if o.direction == "min" else "maximize" for o in p.objectives]
        self.study = optuna.create_study(storage=storage, study_name=self.study_name, sampler=sampler,
                                         directions=directions, load_if_exists=True)
        signature = {"space": p.space.name, "objectives": [o.name for o in p.objectives],
                     "constraints": [c.describe() for c in p.constraints], "seed": self.seed}
        stored = self.study.user_attrs.get("signature")
        if stored is None:
            self.study.set_user_attr("signature", signature)
        elif stored != signature:
            raise ValueError(f"study {self.study_name!r} in this storage belongs to another search {stored}; "
                             f"this search is {signature}. Use a new study_name or storage.")
        self._pending: list[Trial] = []
        self._restore()

    def _restore(self) -> None:
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if done:
            X = np.array([t.user_attrs["x"] for t in done], dtype=np.int64)
            V = np.array([[t.user_attrs["metrics"].get(n, np.nan) for n in self.problem.names] for t in done])
            self.problem.preload(X, V)
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        # trials asked but never told (the process died while evaluating): finish them first, same params
        self._resume = [Trial(self.study, t._trial_id) for t in running]

    def ask(self) -> np.ndarray:
        trials = []
        while len(trials) < self.batch_size:
            trials.append(self._resume.pop(0) if self._resume else self.study.ask(self.distributions))
        self._pending = trials
        return np.array([[t.params[g] for g in self.distributions] for t in trials], dtype=np.int64)

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        p = self.problem
        raw = p.raw(evaluation.rows)
        for trial, x, values, g in zip(self._pending, X, raw, evaluation.G):
            trial.set_user_attr("x", [int(v) for v in x])
            trial.set_user_attr("metrics", {n: float(v) for n, v in zip(p.names, values)})
            for c, v in zip(p.constraints, g):
                trial.set_constraint(c.name, float(v))
            self.study.tell(trial, [float(values[p.names.index(o.name)]) for o in p.objectives])
        self._pending = []

    def config(self) -> dict[str, Any]:
        return {"sampler": self.sampler_name, "storage": self.storage_url, "study_name": self.study_name,
                "batch_size": self.batch_size, "sampler_kwargs": self.sampler_kwargs}


def _register(name: str, sampler: str) -> None:
    def factory(**kwargs: Any) -> OptunaSearcher:
        return OptunaSearcher(sampler, **kwargs)

    factory.__doc__ = f"Optuna {sampler} sampler through ask/tell (see :class:`OptunaSearcher`)."
    SEARCHERS.add(name, factory)


for _name, _sampler in (("optuna_tpe", "tpe"), ("optuna_nsga2", "nsga2")):
    _register(_name, _sampler)
