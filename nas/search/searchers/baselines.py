"""Baseline searchers: random search, regularised evolution, and OFA's evolution vectorised over populations.

* ``random``: uniform samples of the encoding, screened by the cheap constraints (rejection sampling, as OFA does).
* ``regularized_evolution``: aging evolution of Real et al. (AAAI 2019): tournament of ``sample_size`` from a
  population of ``population_size``, the winner's one-gene mutant joins, the oldest member leaves.
* ``evolution``: Once-for-All's ``EvolutionFinder`` (Cai et al., ICLR 2020; ``ofa/nas/search_algorithm``):
  population 100, top 25% are parents and survive, 50% of children by per-gene mutation (p=0.1) and 50% by uniform
  crossover, children rejected until they meet the cheap constraints. Here every step works on whole encoding
  matrices, so a 100 x 500 search costs milliseconds per generation instead of 100 one-at-a-time model calls.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from nas.search.problem import Evaluation
from nas.search.searchers.base import SEARCHERS, Searcher, SearcherConfigError, selection_order

__all__ = ["RandomSearch", "RegularizedEvolution", "Evolution", "mutate_x", "crossover_x", "feasible_samples"]


def mutate_x(X: np.ndarray, sizes: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Resample each gene with probability ``prob`` (vectorised ``space.mutate``)."""
    mask = rng.random(X.shape) < prob
    fresh = (rng.random(X.shape) * sizes).astype(np.int64)  # uniform in [0, size) per gene
    return np.where(mask, fresh, X)


def mutate_one_x(X: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Change exactly one gene per row to a different choice (the mutation of regularised evolution)."""
    n, g = X.shape
    movable = np.flatnonzero(sizes > 1)
    cols = movable[rng.integers(0, len(movable), size=n)]
    shift = 1 + (rng.random(n) * (sizes[cols] - 1)).astype(np.int64)
    out = X.copy()
    out[np.arange(n), cols] = (X[np.arange(n), cols] + shift) % sizes[cols]
    return out


def crossover_x(A: np.ndarray, B: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform crossover per gene (vectorised ``space.crossover``)."""
    return np.where(rng.random(A.shape) < 0.5, A, B)


def feasible_samples(searcher: Searcher, n: int, *, max_rounds: int = 50) -> np.ndarray:
    """``n`` random encodings meeting the cheap constraints (rejection sampling); fewer if they are rare."""
    view, out, have = searcher.problem.view, [], 0
    for _ in range(max_rounds):
        X = view.sample(max(n, 16), searcher.rng)
        X = X[searcher.problem.cheap_violation(X) <= 0]
        out.append(X)
        have += len(X)
        if have >= n:
            break
    X = np.concatenate(out)[:n]
    return X if len(X) else view.sample(n, searcher.rng)


@SEARCHERS.register("random")
class RandomSearch(Searcher):
    """Uniform random search; architectures already evaluated are skipped (their repeats would be free anyway)."""

    def __init__(self, *, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise SearcherConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def ask(self) -> np.ndarray:
        X = feasible_samples(self, 4 * self.batch_size)
        fresh = X[~self.problem.is_queried(X)]
        return (fresh if len(fresh) else X)[: self.batch_size]

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        """Random search learns nothing."""

    def config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}


@SEARCHERS.register("regularized_evolution")
class RegularizedEvolution(Searcher):
    """Aging evolution; with several objectives the tournament is won by NSGA-II's rank/crowding order."""

    def __init__(self, *, population_size: int = 20, sample_size: int = 5, max_retries: int = 20) -> None:
        if not 2 <= sample_size <= population_size:
            raise SearcherConfigError(f"need 2 <= sample_size <= population_size, got {sample_size}, {population_size}")
        self.population_size, self.sample_size, self.max_retries = population_size, sample_size, max_retries

    def _setup(self) -> None:
        self.population: deque[tuple[np.ndarray, np.ndarray, float]] = deque()
        self._initial = feasible_samples(self, self.population_size)

    def ask(self) -> np.ndarray:
        if len(self.population) < self.population_size and len(self._initial):
            x, self._initial = self._initial[:1], self._initial[1:]
            return x
        members = [self.population[i] for i in self.rng.choice(len(self.population), self.sample_size, replace=False)]
        F = np.stack([m[1] for m in members])
        cv = np.array([m[2] for m in members])
        parent = members[int(selection_order(F, cv)[0])][0]
        view = self.problem.view
        child = parent[None]
        for _ in range(self.max_retries):
            child = view.canonical(mutate_one_x(parent[None], view.sizes, self.rng))
            if not np.array_equal(child[0], parent) and self.problem.cheap_violation(child)[0] <= 0:
                break
        return child

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        for x, f, c in zip(X, evaluation.F, evaluation.cv):
            self.population.append((np.asarray(x), f, float(c)))
            if len(self.population) > self.population_size:
                self.population.popleft()

    def config(self) -> dict[str, Any]:
        return {"population_size": self.population_size, "sample_size": self.sample_size}


@SEARCHERS.register("evolution")
class Evolution(Searcher):
    """OFA-style elitist evolution with rejection sampling on cheap constraints, on whole populations."""

    def __init__(self, *, population_size: int = 100, parent_ratio: float = 0.25, mutation_ratio: float = 0.5,
                 mutate_prob: float = 0.1, max_rejection_rounds: int = 20) -> None:
        if not 0 < parent_ratio < 1 or not 0 <= mutation_ratio <= 1 or not 0 <= mutate_prob <= 1:
            raise SearcherConfigError(f"ratios must lie in (0, 1): parent_ratio={parent_ratio}, mutation_ratio="
                                      f"{mutation_ratio}, mutate_prob={mutate_prob}")
        self.population_size, self.parent_ratio = population_size, parent_ratio
        self.mutation_ratio, self.mutate_prob, self.max_rounds = mutation_ratio, mutate_prob, max_rejection_rounds
        self.n_parents = max(2, int(round(parent_ratio * population_size)))

    def _setup(self) -> None:
        self.parents: np.ndarray | None = None
        self.parent_F = self.parent_cv = np.zeros(0)
        self._accept_rate = 1.0

    def ask(self) -> np.ndarray:
        if self.parents is None:
            return feasible_samples(self, self.population_size)
        n_mut = int(round(self.mutation_ratio * self.population_size))
        return self._children(n_mut, self.population_size - n_mut)

    def _mutants(self, n: int) -> np.ndarray:
        P = self.parents[self.rng.integers(0, len(self.parents), n)]
        return mutate_x(P, self.problem.view.sizes, self.rng, self.mutate_prob)

    def _crossovers(self, n: int) -> np.ndarray:
        idx = self.rng.integers(0, len(self.parents), (2, n))
        return crossover_x(self.parents[idx[0]], self.parents[idx[1]], self.rng)

    def _children(self, n_mut: int, n_cross: int) -> np.ndarray:
        """``n_mut`` mutants then ``n_cross`` crossovers meeting the cheap constraints (rejection sampling). Both kinds
        are screened in one call per round, oversampled by the acceptance rate seen so far, so a generation usually
        costs one vectorised constraint evaluation."""
        want = np.array([n_mut, n_cross])
        got: list[list[np.ndarray]] = [[], []]
        have = np.zeros(2, dtype=np.int64)
        for _ in range(self.max_rounds):
            need = np.maximum(want - have, 0)
            if not need.any():
                break
            m = np.ceil(need / self._accept_rate).astype(np.int64) + np.where(need > 0, 2, 0)
            C = self.problem.view.canonical(np.concatenate([self._mutants(int(m[0])), self._crossovers(int(m[1]))]))
            ok = self._acceptable(C)
            self._accept_rate = float(np.clip(0.5 * self._accept_rate + 0.5 * ok.mean(), 0.05, 1.0))
            for k, part in enumerate((slice(0, m[0]), slice(m[0], m[0] + m[1]))):
                got[k].append(C[part][ok[part]])
                have[k] += int(ok[part].sum())
        out = []
        for k in range(2):
            C = np.concatenate(got[k])[: want[k]] if got[k] else np.zeros((0, self.problem.view.n_genes), np.int64)
            if len(C) < want[k]:  # constraint so tight that children rarely meet it: keep the parents' places
                C = np.concatenate([C, self.parents[self.rng.integers(0, len(self.parents), want[k] - len(C))]])
            out.append(C)
        return np.concatenate(out)

    def _acceptable(self, C: np.ndarray) -> np.ndarray:
        """Which candidate children may join (here: those meeting the cheap constraints)."""
        return self.problem.cheap_violation(C) <= 0

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        X = np.asarray(X)
        if self.parents is not None:
            X = np.concatenate([self.parents, X])
            F = np.concatenate([self.parent_F, evaluation.F])
            cv = np.concatenate([self.parent_cv, evaluation.cv])
        else:
            F, cv = evaluation.F, evaluation.cv
        best = selection_order(F, cv)[: self.n_parents]
        self.parents, self.parent_F, self.parent_cv = X[best], F[best], cv[best]

    def config(self) -> dict[str, Any]:
        return {"population_size": self.population_size, "parent_ratio": self.parent_ratio,
                "mutation_ratio": self.mutation_ratio, "mutate_prob": self.mutate_prob}
