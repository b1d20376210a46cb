"""Searchers: ask/tell strategies registered in :data:`SEARCHERS` (pymoo, Optuna, baselines, model-based, EQ-Net GA)."""

from __future__ import annotations

from nas.search.searchers.base import SEARCHERS, Searcher, SearcherConfigError, create_searcher, selection_order
from nas.search.searchers.baselines import Evolution, RandomSearch, RegularizedEvolution
from nas.search.searchers.bayes_linear import BayesianLinearSearch
from nas.search.searchers.eqnet_ga import EQNetGA
from nas.search.searchers.optuna_backend import OptunaSearcher, StorageError, open_storage
from nas.search.searchers.pymoo_backend import PymooSearcher

__all__ = ["SEARCHERS", "Searcher", "SearcherConfigError", "create_searcher", "selection_order", "RandomSearch",
           "RegularizedEvolution", "Evolution", "BayesianLinearSearch", "OptunaSearcher", "StorageError",
           "open_storage", "PymooSearcher", "EQNetGA"]
