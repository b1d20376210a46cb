"""The search driver: ``run_search(space, objectives, constraints, searcher, budget, seed, out_dir)``.

The driver owns the ask/tell loop (Optuna's ask-and-tell, pymoo's ``ask/tell``), the query budget (a query is the
first full evaluation of a distinct architecture; repeats are served from the cache for free), checkpoints and the
results directory; the CLI is a thin layer over it.

Resuming. A searcher's proposals are a deterministic function of its seed and of the evaluations it was told, so
the checkpoint is just the ordered log of queries with their measured values (JSON, written atomically after every
step): on restart the searcher is rebuilt with the same seed and *replayed*, every logged value served from the log
instead of being measured again, until it runs past the log. This reproduces the uninterrupted run exactly and
needs no pickled algorithm objects (pymoo's populations, survival attributes and Generator state would all have to
be reconstructed bit for bit otherwise). Optuna searchers keep their state in the study storage instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.search.objectives import Constraint, Objective
from nas.search.problem import SearchProblem
from nas.search.results import SearchResult, atomic_write_text
from nas.search.searchers.base import Searcher, create_searcher

__all__ = ["run_search", "InfeasibleConstraintsError", "CheckpointMismatchError", "check_feasible",
           "build_result", "CHECKPOINT"]

log = logging.getLogger("nas.search")
CHECKPOINT = "checkpoint.json"


class InfeasibleConstraintsError(ValueError):
    """No architecture met the constraints; ``closest`` describes the least-violating one found."""

    def __init__(self, message: str, closest: dict[str, Any], result: SearchResult | None = None) -> None:
        super().__init__(message)
        self.closest, self.result = closest, result


class CheckpointMismatchError(ValueError):
    """A results directory holds a checkpoint of a different search."""


def _describe(problem: SearchProblem, row: int) -> dict[str, Any]:
    problem.values_at(np.array([row]), problem.cheap_names)
    vals = problem.raw([row])[0]
    return {"arch_id": problem.space.arch_id(problem.arch(row)),
            **{n: float(v) for n, v in zip(problem.names, vals) if np.isfinite(v)}}


def check_feasible(problem: SearchProblem, rng: np.random.Generator, *, n_probe: int = 512,
                   generations: int = 40) -> None:
    """Raise :class:`InfeasibleConstraintsError` if no architecture seems to meet the *cheap* constraints.

    Probes the smallest/largest encodings and random samples, then minimises the total violation with a short
    evolution; only cheap metrics are computed, so this costs no queries.
    """
    cons = [c for c in problem.constraints if not c.expensive]
    if not cons:
        return
    view = problem.view
    X = np.concatenate([np.zeros((1, view.n_genes), np.int64), (view.sizes - 1)[None], view.sample(n_probe, rng)])
    cv = problem.cheap_violation(X)
    for _ in range(generations):
        if (cv <= 0).any():
            return
        elite = X[np.argsort(cv)[:32]]
        kids = np.where(rng.random((256, view.n_genes)) < 0.15, rng.integers(0, view.sizes, (256, view.n_genes)),
                        elite[rng.integers(0, len(elite), 256)])
        X = np.concatenate([elite, view.canonical(kids)])
        cv = problem.cheap_violation(X)
    if (cv <= 0).any():
        return
    closest = _describe(problem, int(problem.rows(X[[int(np.argmin(cv))]])[0]))
    raise InfeasibleConstraintsError(
        f"no architecture of {problem.space.name!r} meets {', '.join(c.describe() for c in cons)}; "
        f"the closest found is {closest} (total violation {float(cv.min()):.4g}). Relax the bound(s).", closest)


def _signature(problem: SearchProblem, searcher_name: str, searcher: Searcher, seed: int) -> dict[str, Any]:
    return json.loads(json.dumps({
        "space": problem.space.spec(), "objectives": [[o.name, o.direction, o.expensive] for o in problem.objectives],
        "constraints": [c.describe() for c in problem.constraints], "searcher": searcher_name,
        "searcher_config": searcher.config(), "seed": seed}, default=str))


def _write_checkpoint(path: Path, signature: dict[str, Any], problem: SearchProblem, steps: int) -> None:
    rows = np.array(problem.history, dtype=np.int64)
    queries = [{"x": [int(v) for v in x], "values": [None if np.isnan(v) else float(v) for v in vals]}
               for x, vals in zip(problem.encodings(rows), problem.raw(rows))]
    atomic_write_text(path, json.dumps({"version": 1, "signature": signature, "metrics": problem.names,
                                        "steps": steps, "queries": queries}))


def _load_checkpoint(path: Path, signature: dict[str, Any], problem: SearchProblem) -> int:
    state = json.loads(path.read_text())
    if state.get("signature") != signature:
        raise CheckpointMismatchError(
            f"{path} belongs to another search:\n  stored: {state.get('signature')}\n  this:   {signature}\n"
            "Use another out_dir, or resume=False to start over (the old checkpoint is then overwritten).")
    q = state["queries"]
    if q:
        cols = [state["metrics"].index(n) if n in state["metrics"] else None for n in problem.names]
        V = np.array([[np.nan if c is None or e["values"][c] is None else e["values"][c] for c in cols] for e in q])
        # values only: the queries are marked as the replayed searcher asks for them again, in the same order
        problem.preload(np.array([e["x"] for e in q], dtype=np.int64), V, queried=False)
    return len(q)


def build_result(problem: SearchProblem, *, searcher: str, searcher_config: Mapping[str, Any], seed: int,
                 budget: int, stop_reason: str, seconds: float) -> SearchResult:
    rows = np.array(problem.history, dtype=np.int64)
    return SearchResult(
        space=problem.space,
        objectives=[{"name": o.name, "direction": o.direction, "expensive": o.expensive} for o in problem.objectives],
        constraints=[{"name": c.name, "lower": c.lower, "upper": c.upper} for c in problem.constraints],
        metric_names=list(problem.names), X=problem.encodings(rows), values=problem.raw(rows),
        F=problem.F_of(rows), G=problem.G_of(rows), searcher=searcher, searcher_config=dict(searcher_config),
        seed=seed, budget=budget, stop_reason=stop_reason, seconds=seconds)


def run_search(space: Any, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
               searcher: str | Searcher = "random", *, budget: int, seed: int = 0, out_dir: str | Path | None = None,
               searcher_kwargs: Mapping[str, Any] | None = None, resume: bool = True, checkpoint_every: int = 1,
               max_stale_steps: int = 200, encoded_fns: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
               progress: Callable[[SearchProblem, int], None] | None = None, save: bool = True, plot: bool = True,
               max_steps: int | None = None, problem: SearchProblem | None = None) -> SearchResult:
    """Search ``space`` for ``budget`` queries and return (and, with ``out_dir``, write) a :class:`SearchResult`.

    ``searcher`` is a registered name (``SEARCHERS``) or an instance; ``encoded_fns`` gives metrics a vectorised path
    on encoding matrices; ``max_steps`` bounds the ask/tell steps (generations) whatever the number of queries.
    Raises :class:`InfeasibleConstraintsError` when no architecture meets the constraints
    (before the search for cheap constraints; after saving the results for expensive ones).
    """
    if budget < 1:
        raise ValueError(f"budget must be a positive number of queries, got {budget}")
    name = searcher if isinstance(searcher, str) else type(searcher).__name__
    algo = create_searcher(searcher, **dict(searcher_kwargs or {})) if isinstance(searcher, str) else searcher
    problem = problem or SearchProblem(space, objectives, constraints)
    for metric, fn in (encoded_fns or {}).items():
        problem.set_encoded_fn(metric, fn)
    check_feasible(problem, np.random.default_rng([seed, 7]))
    out = Path(out_dir) if out_dir is not None else None
    signature = _signature(problem, name, algo, seed)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume and (out / CHECKPOINT).exists():
            n = _load_checkpoint(out / CHECKPOINT, signature, problem)
            log.info("resuming %s from %d logged queries", name, n)
    algo.setup(problem, seed, workdir=out)
    start, steps, stale, reason = time.perf_counter(), 0, 0, "budget"
    while problem.n_queries < budget:
        if max_steps is not None and steps >= max_steps:
            reason = "max_steps"
            break
        if algo.done:
            reason = "exhausted"
            break
        X = np.asarray(algo.ask(), dtype=np.int64)
        if not len(X):
            reason = "exhausted"
            break
        k = problem.within_budget(X, budget - problem.n_queries)
        ev = problem.evaluate_x(X[:k])
        algo.tell(X[:k], ev)
        steps += 1
        stale = 0 if ev.new.any() else stale + 1
        if out is not None and steps % checkpoint_every == 0:
            _write_checkpoint(out / CHECKPOINT, signature, problem, steps)
        if progress is not None:
            progress(problem, steps)
        if stale >= max_stale_steps:
            reason = "stalled"
            log.warning("%s proposed only known architectures for %d steps; stopping at %d queries",
                        name, stale, problem.n_queries)
            break
    result = build_result(problem, searcher=name, searcher_config=algo.config(), seed=seed, budget=budget,
                          stop_reason=reason, seconds=time.perf_counter() - start)
    if out is not None:
        _write_checkpoint(out / CHECKPOINT, signature, problem, steps)
        if save:
            result.save(out, plot=plot)
    if problem.constraints and result.n and not result.feasible.any():
        closest = result.records(np.array([result.closest_infeasible()]))[0]
        raise InfeasibleConstraintsError(
            f"none of the {result.n} evaluated architectures meets "
            f"{', '.join(c.describe() for c in problem.constraints)}; closest: {closest['arch_id']} "
            f"({ {n: closest[n] for n in result.metric_names} })" + (f"; results saved in {out}" if out else ""),
            closest, result)
    return result
