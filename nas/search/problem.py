"""One search problem built from a space's encoding: objectives and constraints declared apart, evaluations cached.

The problem is what every searcher sees (DyNAS-T's pymoo ``Problem`` classes and evaluation interfaces, collapsed
into one definition). It evaluates *batches*: a population's encodings are canonicalised in one go
(:class:`~nas.search.encoded.EncodedView`), looked up in a cache keyed by architecture identity (canonical
encoding, one-to-one with ``space.arch_id``), and only the missing metrics of the new architectures are computed,
one vectorised call per metric. Cheap metrics (MACs, latency tables, predictors) can be asked for on their own, so
searchers may screen candidates for free; a *query* is the first full evaluation of a distinct architecture
(the first time its expensive metrics are computed), which is what budgets count.
Values are returned in minimisation form: ``F = sign * value`` per objective, ``G = violation`` (<= 0 feasible).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymoo.core.problem import Problem

from nas.search.encoded import EncodedView
from nas.search.objectives import Constraint, Objective
from search_spaces.base import SearchSpace

__all__ = ["SearchProblem", "Evaluation", "PymooProblem"]


@dataclass(frozen=True)
class Evaluation:
    """Values of a batch, row-aligned with the request."""

    rows: np.ndarray  # store rows (stable identity of each architecture)
    F: np.ndarray  # (n, n_obj) minimisation form
    G: np.ndarray  # (n, n_constr) violations, <= 0 feasible
    new: np.ndarray  # bool: this request made the first full evaluation (a query)

    @property
    def cv(self) -> np.ndarray:
        """Total constraint violation (0 when feasible)."""
        return np.clip(self.G, 0.0, None).sum(axis=1) if self.G.shape[1] else np.zeros(len(self.F))


class SearchProblem:
    """Space + objectives + constraints, with a per-architecture cache of every metric."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective],
                 constraints: Sequence[Constraint] = ()) -> None:
        if not objectives:
            raise ValueError("a search needs at least one objective")
        self.space, self.view = space, EncodedView(space)
        self.objectives, self.constraints = tuple(objectives), tuple(constraints)
        self.metrics: dict[str, Objective | Constraint] = {}
        for m in (*self.objectives, *self.constraints):
            other = self.metrics.get(m.name)
            if other is not None and (other.fn is not m.fn or other.expensive != m.expensive):
                raise ValueError(f"two different functions are named {m.name!r}; give them distinct names, or build "
                                 "the constraint with Constraint.on(objective, ...) to share one measurement")
            self.metrics.setdefault(m.name, m)
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be unique, got {names}")
        self.names = list(self.metrics)
        self.expensive = [n for n in self.names if self.metrics[n].expensive]
        self.cheap_names = [n for n in self.names if not self.metrics[n].expensive]
        self._col = {n: i for i, n in enumerate(self.names)}
        self._obj_cols = np.array([self._col[o.name] for o in self.objectives])
        self._signs = np.array([o.sign for o in self.objectives])
        self._fast: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            n: m.fn_x for n, m in self.metrics.items() if m.fn_x is not None}
        self._index: dict[bytes, int] = {}
        self._X = np.zeros((64, self.view.n_genes), dtype=np.int64)
        self._V = np.full((64, len(self.names)), np.nan)
        self._archs: list[Any] = []
        self.history: list[int] = []  # store rows in the order of their first full evaluation (the queries)
        self._queried = np.zeros(64, dtype=bool)

    # -- declaration helpers ------------------------------------------------------------------------------
    @property
    def n_obj(self) -> int:
        return len(self.objectives)

    @property
    def n_constr(self) -> int:
        return len(self.constraints)

    def set_encoded_fn(self, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        """Give metric ``name`` a fast path on canonical encoding matrices (must agree with its arch function)."""
        if name not in self.metrics:
            raise KeyError(f"no metric {name!r}; metrics: {self.names}")
        self._fast[name] = fn

    # -- evaluation -----------------------------------------------------------------------------------------
    @property
    def n_queries(self) -> int:
        return len(self.history)

    def evaluate(self, archs: Sequence[Any]) -> Evaluation:
        return self.evaluate_x(self.view.encode(archs), archs=archs)

    def evaluate_x(self, X: np.ndarray, *, archs: Sequence[Any] | None = None) -> Evaluation:
        """Full evaluation (all metrics) of a batch of encodings."""
        rows = self.rows(X, archs)
        self._fill(rows, self.names)
        new = np.zeros(len(rows), dtype=bool)
        for i, r in enumerate(rows):
            if not self._queried[r]:
                self._queried[r] = new[i] = True
                self.history.append(int(r))
        return Evaluation(rows, self._F(rows), self._G(rows), new)

    def within_budget(self, X: np.ndarray, n_new: int) -> int:
        """Length of the longest prefix of ``X`` whose full evaluation makes at most ``n_new`` queries."""
        if n_new >= len(X):
            return len(X)
        seen: set[bytes] = set()
        for i, key in enumerate(self.view.keys(self.view.canonical(X))):
            r = self._index.get(key)
            if (r is None or not self._queried[r]) and key not in seen:
                if len(seen) == n_new:
                    return i
                seen.add(key)
        return len(X)

    def values(self, X: np.ndarray, names: Iterable[str]) -> np.ndarray:
        """Raw values of the chosen metrics (computing only those); ``(n, len(names))``."""
        names = list(names)
        unknown = [n for n in names if n not in self._col]
        if unknown:
            raise KeyError(f"unknown metrics {unknown}; metrics: {self.names}")
        if all(n in self._fast and not self.metrics[n].expensive for n in names):
            # cheap and vectorised: computing is cheaper than caching (screening thousands of rejected children)
            Xc = self.view.canonical(X)
            return np.stack([np.asarray(self._fast[n](Xc), dtype=np.float64).reshape(-1) for n in names], axis=1)
        return self.values_at(self.rows(X), names)

    def values_at(self, rows: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Like :meth:`values` for store rows (from :meth:`rows`), skipping the identity look-up."""
        rows = np.asarray(rows, dtype=np.int64)
        self._fill(rows, names)
        return self._V[np.ix_(rows, [self._col[n] for n in names])]

    def queried(self, rows: np.ndarray) -> np.ndarray:
        """Whether each store row has been queried (fully evaluated)."""
        return self._queried[np.asarray(rows, dtype=np.int64)].copy()

    def cheap_violation(self, X: np.ndarray) -> np.ndarray:
        """Total violation of the cheap constraints only (screening before spending queries)."""
        cons = [c for c in self.constraints if not c.expensive]
        if not cons:
            return np.zeros(len(X))
        V = self.values(X, [c.name for c in cons])
        return np.sum([np.clip(c.violation(V[:, i]), 0, None) for i, c in enumerate(cons)], axis=0)

    def is_queried(self, X: np.ndarray) -> np.ndarray:
        keys = self.view.keys(self.view.canonical(X))
        return np.array([k in self._index and bool(self._queried[self._index[k]]) for k in keys], dtype=bool)

    # -- stored results -------------------------------------------------------------------------------------
    def arch(self, row: int) -> Any:
        if self._archs[row] is None:
            self._archs[row] = self.space.decode(self._X[row])
        return self._archs[row]

    def encodings(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._X[np.asarray(rows, dtype=np.int64)].copy()

    def raw(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Raw metric values, columns in ``self.names`` order."""
        return self._V[np.asarray(rows, dtype=np.int64)].copy()

    def F_of(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._F(np.asarray(rows, dtype=np.int64))

    def G_of(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._G(np.asarray(rows, dtype=np.int64))

    def preload(self, X: np.ndarray, values: np.ndarray, *, queried: bool = True) -> None:
        """Restore cached measurements (resume): ``values`` columns in ``self.names`` order, NaN = not measured."""
        rows = self.rows(X)
        for r, v in zip(rows, np.asarray(values, dtype=np.float64)):
            known = ~np.isnan(v)
            self._V[r, known] = v[known]
            if queried and not self._queried[r]:
                self._queried[r] = True
                self.history.append(int(r))

    def to_pymoo(self) -> PymooProblem:
        return PymooProblem(self)

    # -- internals -------------------------------------------------------------------------------------------
    def rows(self, X: np.ndarray, archs: Sequence[Any] | None = None) -> np.ndarray:
        """Store rows of the architectures encoded by ``X`` (added, unevaluated, if new)."""
        Xc = self.view.canonical(X)
        out = np.empty(len(Xc), dtype=np.int64)
        for i, key in enumerate(self.view.keys(Xc)):
            r = self._index.get(key)
            if r is None:
                r = self._add(Xc[i], None if archs is None else archs[i])
                self._index[key] = r
            out[i] = r
        return out

    def _add(self, x: np.ndarray, arch: Any) -> int:
        r = len(self._archs)
        if r == len(self._X):
            self._X = np.concatenate([self._X, np.zeros_like(self._X)])
            self._V = np.concatenate([self._V, np.full_like(self._V, np.nan)])
            self._queried = np.concatenate([self._queried, np.zeros_like(self._queried)])
        self._X[r] = x
        self._archs.append(arch)
        return r

    def _fill(self, rows: np.ndarray, names: Sequence[str]) -> None:
        for name in names:
            c = self._col[name]
            need = np.unique(rows[np.isnan(self._V[rows, c])])
            if not len(need):
                continue
            fast = self._fast.get(name)
            if fast is not None:
                vals = np.asarray(fast(self._X[need]), dtype=np.float64).reshape(-1)
            else:
                vals = self.metrics[name]([self.arch(int(r)) for r in need])
            self._V[need, c] = vals

    def _F(self, rows: np.ndarray) -> np.ndarray:
        return self._V[np.ix_(rows, self._obj_cols)] * self._signs

    def _G(self, rows: np.ndarray) -> np.ndarray:
        if not self.constraints:
            return np.zeros((len(rows), 0))
        return np.stack([c.violation(self._V[rows, self._col[c.name]]) for c in self.constraints], axis=1)


class PymooProblem(Problem):
    """Vectorised pymoo view of a :class:`SearchProblem` (``elementwise=False``: one call per population)."""

    def __init__(self, problem: SearchProblem) -> None:
        xl, xu = problem.space.bounds()
        super().__init__(n_var=len(xl), n_obj=problem.n_obj, n_ieq_constr=problem.n_constr,
                         xl=xl, xu=xu, vtype=int, elementwise=False)
        self.search_problem = problem

    def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        ev = self.search_problem.evaluate_x(np.asarray(x))
        out["F"] = ev.F
        if self.n_ieq_constr:
            out["G"] = ev.G
