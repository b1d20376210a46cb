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
        self._index = _RowIndex(self.view.n_genes)
        self._screened: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
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
        self._screened.clear()
        _, first = np.unique(rows, return_index=True)
        first = np.sort(first)
        first = first[~self._queried[rows[first]]]  # first request of each not-yet-queried row, in request order
        new = np.zeros(len(rows), dtype=bool)
        new[first] = True
        self._queried[rows[first]] = True
        self.history.extend(rows[first].tolist())
        return Evaluation(rows, self._F(rows), self._G(rows), new)

    def within_budget(self, X: np.ndarray, n_new: int) -> int:
        """Length of the longest prefix of ``X`` whose full evaluation makes at most ``n_new`` queries."""
        if n_new >= len(X):
            return len(X)
        Xc = self.view.canonical(X)
        known = self._index.lookup(Xc, self._X)
        fresh = (known < 0) | ~self._queried[np.maximum(known, 0)]
        first_idx, _ = unique_rows(Xc, self._index.hashes(Xc))
        first = np.zeros(len(Xc), dtype=bool)
        first[first_idx] = True
        starts = np.flatnonzero(fresh & first)  # where each distinct new architecture first appears
        return len(X) if len(starts) <= n_new else int(starts[n_new])

    def values(self, X: np.ndarray, names: Iterable[str]) -> np.ndarray:
        """Raw values of the chosen metrics (computing only those); ``(n, len(names))``."""
        names = list(names)
        unknown = [n for n in names if n not in self._col]
        if unknown:
            raise KeyError(f"unknown metrics {unknown}; metrics: {self.names}")
        if all(n in self._fast and not self.metrics[n].expensive for n in names):
            # cheap and vectorised: computing is cheaper than caching (screening thousands of rejected children)
            Xc = self.view.canonical(X)
            V = np.stack([np.asarray(self._fast[n](Xc), dtype=np.float64).reshape(-1) for n in names], axis=1)
            self._remember(Xc, names, V)
            return V
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
        known = self._index.lookup(self.view.canonical(X), self._X)
        return (known >= 0) & self._queried[np.maximum(known, 0)]

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
        h = self._index.hashes(Xc)
        out = self._index.lookup(Xc, self._X, h)
        missing = np.flatnonzero(out < 0)
        if len(missing):
            Xm, hm = Xc[missing], h[missing]
            first, inverse = unique_rows(Xm, hm)
            order = np.argsort(first)  # new rows get store rows in order of first appearance
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            new_rows = self._add(Xm[first[order]],
                                 None if archs is None else [archs[i] for i in missing[first[order]]],
                                 hm[first[order]])
            out[missing] = new_rows[rank[inverse]]
        return out

    def _add(self, Xc: np.ndarray, archs: Sequence[Any] | None, hashes: np.ndarray) -> np.ndarray:
        """Append distinct, not yet stored canonical rows; returns their store rows."""
        start, n = len(self._archs), len(Xc)
        while start + n > len(self._X):
            self._X = np.concatenate([self._X, np.zeros_like(self._X)])
            self._V = np.concatenate([self._V, np.full_like(self._V, np.nan)])
            self._queried = np.concatenate([self._queried, np.zeros_like(self._queried)])
        rows = np.arange(start, start + n)
        self._X[rows] = Xc
        self._archs.extend([None] * n if archs is None else archs)
        self._index.insert(Xc, rows, hashes)
        return rows

    def _remember(self, Xc: np.ndarray, names: list[str], V: np.ndarray) -> None:
        """Keep cheap values computed for screening (e.g. a latency constraint on children) until the next full
        evaluation, which then takes them instead of pricing the same architectures again."""
        if sum(len(m[0]) for m in self._screened) + len(Xc) > 50_000:
            self._screened.clear()
        self._screened.append((self._index.hashes(Xc), Xc, dict(zip(names, V.T))))

    def _from_screening(self, rows: np.ndarray, name: str) -> np.ndarray:
        """Values of ``name`` remembered from screening for store rows ``rows`` (NaN where not remembered)."""
        out = np.full(len(rows), np.nan)
        if not any(name in vals for _, _, vals in self._screened):
            return out
        X = self._X[rows]
        where = dict(zip(self._index.hashes(X).tolist(), range(len(rows))))
        for h, Xc, vals in self._screened:
            if name not in vals:
                continue
            get = where.get
            at = np.array([get(k, -1) for k in h.tolist()], dtype=np.int64)
            hit = np.flatnonzero(at >= 0)
            hit = hit[np.all(X[at[hit]] == Xc[hit], axis=1)]
            out[at[hit]] = vals[name][hit]
        return out

    def _fill(self, rows: np.ndarray, names: Sequence[str]) -> None:
        for name in names:
            c = self._col[name]
            need = np.unique(rows[np.isnan(self._V[rows, c])])
            if not len(need):
                continue
            if not self.metrics[name].expensive and name in self._fast:
                known = self._from_screening(need, name)
                self._V[need, c] = known
                need = need[np.isnan(known)]
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


class _RowIndex:
    """Canonical encoding -> store row for whole batches: a 64-bit hash per row (random odd multipliers, wrap-around
    sum, one vectorised expression) keys a dictionary of Python ints, and every hit is checked against the stored
    encoding; a row whose hash collides with a different stored row (astronomically rare) goes to an exact
    dictionary keyed by its bytes instead."""

    def __init__(self, n_genes: int) -> None:
        self._mult = np.random.default_rng(0x5EED).integers(1, 2**62, n_genes, dtype=np.uint64) * 2 + 1
        self._rows: dict[int, int] = {}
        self._overflow: dict[bytes, int] = {}

    def hashes(self, Xc: np.ndarray) -> np.ndarray:
        h = ((Xc.astype(np.uint64) + np.uint64(1)) * self._mult).sum(axis=1, dtype=np.uint64)
        return h ^ (h >> np.uint64(29))

    def lookup(self, Xc: np.ndarray, store: np.ndarray, h: np.ndarray | None = None) -> np.ndarray:
        """Store row of each canonical row of ``Xc`` (hashes ``h`` if already computed), -1 where unknown."""
        get = self._rows.get
        h = self.hashes(Xc) if h is None else h
        cand = np.array([get(k, -1) for k in h.tolist()], dtype=np.int64)
        hit = cand >= 0
        same = hit & np.all(store[np.maximum(cand, 0)] == Xc, axis=1)
        out = np.where(same, cand, -1)
        if self._overflow:
            for i in np.flatnonzero(hit & ~same):
                out[i] = self._overflow.get(np.ascontiguousarray(Xc[i]).tobytes(), -1)
        return out

    def insert(self, Xc: np.ndarray, rows: np.ndarray, h: np.ndarray) -> None:
        """Add distinct canonical rows (hashes ``h``), none of them stored yet."""
        keys, values = h.tolist(), rows.tolist()
        batch = dict(zip(keys, values))
        if len(batch) == len(keys) and self._rows.keys().isdisjoint(batch):  # no collision: one C-level update
            self._rows.update(batch)
            return
        for k, x, r in zip(keys, Xc, values):
            if self._rows.setdefault(k, r) != r:  # hash taken by another architecture
                self._overflow[np.ascontiguousarray(x).tobytes()] = r


def unique_rows(Xc: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(Xc, axis=0, return_index, return_inverse)`` through the rows' hashes (exact: checked)."""
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(Xc[first[inverse]], Xc):  # two different rows share a hash: sort the rows themselves
        _, first, inverse = np.unique(Xc, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return first, inverse


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
