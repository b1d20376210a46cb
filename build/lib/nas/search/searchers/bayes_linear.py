"""Thompson sampling over a Bayesian linear model of one-hot features (BOCS-style model-based search).

Following BOCS (Baptista & Poloczek, ICML 2018: Bayesian linear regression on binary features, Thompson sampling,
acquisition maximised over the discrete space) with a Gaussian prior on depth-masked one-hot features and,
optionally (``pair_scale``), BOCS's second-order terms: products of the one-hots of every pair of genes, whose prior
scale is fixed or chosen at every step by marginal likelihood (``pair_scale="auto"``, empirical Bayes over
``pair_grid``; first-order terms only when the pairs would exceed ``max_pair_features``).

Each expensive metric gets its own model; cheap metrics (MACs, params, a latency table) and cheap constraints are
computed exactly on the candidates, so queries are spent only where the expensive metric is uncertain and the
architecture can be feasible. Per step: fit on everything queried so far, draw one weight vector
from the posterior (scaled by ``temperature`` < 1 to favour exploitation), and propose the best not-yet-queried
candidate under that draw: the argmax for one objective, or the largest hypervolume improvement over the current
front for several. Candidates are the whole space when it is small enough to enumerate (NAS-Bench-201: 15,625),
otherwise a fresh pool of random samples plus one- and two-gene mutations and crossovers of the best archs found.

Targets are standardised after clipping the bad tail at the ``clip_quantile`` of what was observed, so collapsed
networks (a cell whose output is cut off, ~10% accuracy) do not dominate a linear fit of the good region.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nas.search.pareto import hv_improvement_2d, hypervolume, pareto_front
from nas.search.problem import Evaluation
from nas.search.searchers.base import SEARCHERS, Searcher, selection_order
from nas.search.searchers.baselines import crossover_x, feasible_samples, mutate_one_x

__all__ = ["BayesianLinearSearch", "posterior_sample", "enumerate_encodings"]


def posterior_sample(A: np.ndarray, t: np.ndarray, rng: np.random.Generator, *, noise: float, prior_var: float,
                     temperature: float) -> np.ndarray:
    """One draw of w from N(0, prior_var I) prior and Gaussian likelihood (Matheron's rule, dual form)."""
    n, p = A.shape
    w0 = temperature * np.sqrt(prior_var) * rng.standard_normal(p)
    eps = temperature * np.sqrt(noise) * rng.standard_normal(n)
    K = prior_var * (A @ A.T) + noise * np.eye(n)
    return w0 + prior_var * (A.T @ np.linalg.solve(K, t - A @ w0 - eps))


def enumerate_encodings(view: Any, limit: int) -> np.ndarray | None:
    """Every distinct (canonical) encoding if the raw product of gene sizes is at most ``limit``, else None."""
    total = int(np.prod(view.sizes.astype(float)))
    if total > limit:
        return None
    grid = np.indices(tuple(view.sizes)).reshape(view.n_genes, -1).T
    return np.unique(view.canonical(grid), axis=0)


def _nondominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows (minimisation); a sort and a running minimum for two objectives."""
    if F.shape[1] != 2:
        return pareto_front(F)
    order = np.lexsort((F[:, 1], F[:, 0]))
    best_before = np.concatenate([[np.inf], np.minimum.accumulate(F[order, 1])[:-1]])
    return order[F[order, 1] < best_before]


@SEARCHERS.register("bayesian_linear")
class BayesianLinearSearch(Searcher):
    """Model-based search; see the module docstring."""

    def __init__(self, *, n_init: int = 5, batch_size: int = 1, temperature: float = 0.5, noise: float = 0.1,
                 prior_var: float = 6.0, clip_quantile: float = 0.3, max_enumerate: int = 50_000,
                 pool_size: int = 2000, n_elite: int = 10, pair_scale: float | str = 0.0,
                 pair_grid: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
                 max_pair_features: int = 5000) -> None:
        if n_init < 1 or batch_size < 1:
            raise ValueError(f"n_init and batch_size must be >= 1, got {n_init}, {batch_size}")
        if not 0.0 <= clip_quantile < 1.0 or temperature <= 0 or noise <= 0 or prior_var <= 0:
            raise ValueError("need 0 <= clip_quantile < 1 and positive temperature, noise, prior_var; got "
                             f"{clip_quantile}, {temperature}, {noise}, {prior_var}")
        self.n_init, self.batch_size, self.temperature, self.noise = n_init, batch_size, temperature, noise
        self.prior_var, self.clip_quantile, self.max_enumerate = prior_var, clip_quantile, max_enumerate
        if not (pair_scale == "auto" or (isinstance(pair_scale, (int, float)) and pair_scale >= 0)):
            raise ValueError(f"pair_scale must be a non-negative number or 'auto', got {pair_scale!r}")
        self.pool_size, self.n_elite, self.pair_scale = pool_size, n_elite, pair_scale
        self.pair_grid, self.max_pair_features = tuple(pair_grid), max_pair_features

    def _setup(self) -> None:
        p = self.problem
        sizes = p.view.sizes
        n_pairs = int((np.sum(sizes) ** 2 - np.sum(sizes**2)) // 2)
        self._scales = (0.0,) if self.pair_scale == 0 else self.pair_grid if self.pair_scale == "auto" else (
            float(self.pair_scale),)
        if n_pairs > self.max_pair_features:  # too many gene pairs (e.g. OFA-MBv3): first-order features only
            self._scales = (0.0,)
        self._pairs = any(s > 0 for s in self._scales)
        self.chosen_scales: list[float] = []
        self.expensive = [n for n in p.names if p.metrics[n].expensive]
        self.all_X = enumerate_encodings(p.view, self.max_enumerate)
        if self.all_X is not None:  # a small space: every feasible architecture is a candidate, features cached
            self.all_X = self.all_X[p.cheap_violation(self.all_X) <= 0] if p.constraints else self.all_X
            self._all_rows = p.rows(self.all_X)
            self._all_sparse = self._sparse_features(self.all_X)
        self._weight_var = self.prior_var / max(1.0, float(p.view.active(p.view.sample(64, self.rng)).sum(1).mean()))
        self._exhausted = False

    @property
    def done(self) -> bool:
        return self._exhausted

    def ask(self) -> np.ndarray:
        p = self.problem
        if p.n_queries < self.n_init or not self.expensive:
            X = feasible_samples(self, 4 * self.batch_size)
            fresh = X[~p.is_queried(X)]
            return (fresh if len(fresh) else X)[: self.batch_size]
        C, rows, feat = self._candidates()
        if not len(C):
            self._exhausted = True
            return np.zeros((0, p.view.n_genes), dtype=np.int64)
        picks: list[int] = []
        for _ in range(min(self.batch_size, len(C))):
            score = self._score(rows, feat)
            score[picks] = -np.inf
            picks.append(int(np.argmax(score)))
        return C[picks]

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        """The model is refit from the problem's store at every ask."""

    # -- candidates ------------------------------------------------------------------------------------------
    def _candidates(self) -> tuple[np.ndarray, np.ndarray, Any]:
        """Not-yet-queried candidate encodings, their store rows and their features: dense one-hots for a pool,
        or, for an enumerated space, ``(keep, idx, val)``: the sparse features of every architecture (each row's
        non-zero feature indices and values, built once) and which rows are candidates, so nothing large is copied
        per step."""
        p = self.problem
        if self.all_X is not None:
            keep = np.flatnonzero(~p.queried(self._all_rows))
            return self.all_X[keep], self._all_rows[keep], (keep, *self._all_sparse)
        else:
            rows = np.array(p.history)
            elite = p.encodings(rows[selection_order(p.F_of(rows), self._cv(rows))[: self.n_elite]])
            k = self.pool_size // 4
            one = mutate_one_x(elite[self.rng.integers(0, len(elite), k)], p.view.sizes, self.rng)
            two = mutate_one_x(mutate_one_x(elite[self.rng.integers(0, len(elite), k)], p.view.sizes, self.rng),
                               p.view.sizes, self.rng)
            idx = self.rng.integers(0, len(elite), (2, k))
            cross = crossover_x(elite[idx[0]], elite[idx[1]], self.rng)
            C = p.view.canonical(np.concatenate([one, two, cross]))
            C = np.concatenate([C[p.cheap_violation(C) <= 0], feasible_samples(self, self.pool_size - 3 * k)])
            C = np.unique(C, axis=0)
        rows = p.rows(C)
        keep = ~p.queried(rows)
        return C[keep], rows[keep], self._features(C[keep])

    def _sparse_features(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of the non-zero entries of :meth:`_features` (one per gene and gene pair)."""
        view = self.problem.view
        act = view.active(X).astype(np.float64)
        idx, val = [view.offsets[None, :] + X], [act]
        if self._pairs:
            start = view.n_features
            for i in range(view.n_genes):
                for j in range(i + 1, view.n_genes):
                    idx.append((start + X[:, i] * view.sizes[j] + X[:, j])[:, None])
                    val.append((act[:, i] * act[:, j])[:, None])
                    start += int(view.sizes[i] * view.sizes[j])
        return np.concatenate(idx, axis=1), np.concatenate(val, axis=1)

    def _features(self, X: np.ndarray) -> np.ndarray:
        """One-hot features, plus (when pairs are enabled) products of the one-hots of every gene pair, unscaled."""
        oh = self.problem.view.onehot(X).astype(np.float64)
        if not self._pairs:
            return oh
        view = self.problem.view
        blocks = [oh[:, view.offsets[i]: view.offsets[i] + view.sizes[i]] for i in range(view.n_genes)]
        pairs = [(blocks[i][:, :, None] * blocks[j][:, None, :]).reshape(len(X), -1)
                 for i in range(view.n_genes) for j in range(i + 1, view.n_genes)]
        return np.concatenate([oh, np.concatenate(pairs, axis=1)], axis=1)

    def _cv(self, rows: np.ndarray) -> np.ndarray:
        G = self.problem.G_of(rows)
        return np.clip(G, 0, None).sum(1) if G.shape[1] else np.zeros(len(rows))

    # -- model -------------------------------------------------------------------------------------------------
    def _sampled_raw(self, feat: Any) -> dict[str, np.ndarray]:
        """One posterior draw of every expensive metric on the candidates (given their features)."""
        p = self.problem
        rows = np.array(p.history)
        A = self._features(p.encodings(rows))
        raw = p.raw(rows)
        out = {}
        n_lin = p.view.n_features
        for name in self.expensive:
            y = raw[:, p.names.index(name)]
            t, mu, sd = self._transform(name, y)
            scale = self._choose_scale(A, t, n_lin)
            col = np.ones(A.shape[1])
            col[n_lin:] = scale
            w = posterior_sample(A * col, t, self.rng, noise=self.noise, prior_var=self._weight_var,
                                 temperature=self.temperature)
            wc = w * col
            if isinstance(feat, tuple):  # enumerated space: sparse features of all archs, keep the candidates
                keep, idx, val = feat
                out[name] = mu + sd * (wc[idx[keep]] * val[keep]).sum(axis=1)
            else:
                out[name] = mu + sd * (feat @ wc)
        return out

    def _choose_scale(self, A: np.ndarray, t: np.ndarray, n_lin: int) -> float:
        """Pair-feature scale with the highest marginal likelihood (empirical Bayes) among the allowed ones."""
        if len(self._scales) == 1:
            return self._scales[0]
        G1, G2 = A[:, :n_lin] @ A[:, :n_lin].T, A[:, n_lin:] @ A[:, n_lin:].T
        best, best_ll = self._scales[0], -np.inf
        for s in self._scales:
            K = self._weight_var * (G1 + s * s * G2) + self.noise * np.eye(len(t))
            L = np.linalg.cholesky(K)
            z = np.linalg.solve(L, t)
            ll = -0.5 * z @ z - np.log(np.diag(L)).sum()
            if ll > best_ll:
                best, best_ll = s, ll
        self.chosen_scales.append(best)
        return best

    def _transform(self, name: str, y: np.ndarray) -> tuple[np.ndarray, float, float]:
        metric = self.problem.metrics[name]
        direction = getattr(metric, "direction", None)
        if direction == "max":
            y = np.maximum(y, np.quantile(y, self.clip_quantile))
        elif direction == "min":
            y = np.minimum(y, np.quantile(y, 1.0 - self.clip_quantile))
        mu, sd = float(y.mean()), float(y.std()) or 1.0
        return (y - mu) / sd, mu, sd

    def _score(self, rows: np.ndarray, feat: Any) -> np.ndarray:
        """Higher is better: minus the sampled objective (one objective) or the sampled HV improvement."""
        p = self.problem
        sampled = self._sampled_raw(feat)
        cheap = [n for n in p.names if n not in sampled]
        values = dict(zip(cheap, p.values_at(rows, cheap).T)) if cheap else {}
        values.update(sampled)
        F = np.stack([values[o.name] * o.sign for o in p.objectives], axis=1)
        cv = np.zeros(len(rows))
        for c in p.constraints:
            cv += np.clip(c.violation(values[c.name]), 0, None)
        penalty = np.where(cv > 0, 1e6 + cv, 0.0)
        if p.n_obj == 1:
            return -F[:, 0] - penalty
        return self._hv_improvement(F) - penalty

    def _hv_improvement(self, F: np.ndarray) -> np.ndarray:
        """Gain of each candidate over the queried front under this draw. Reference point: the nadir of the front
        of queried and (sampled) candidate points, pushed out by 10% of its range; candidates beyond it (e.g. more
        parameters than the most accurate architecture of the draw) are dominated under the draw and gain nothing."""
        p = self.problem
        rows = np.array(p.history)
        front_F = p.F_of(rows)[pareto_front(p.F_of(rows), self._cv(rows))]
        if not len(front_F):
            return -F.sum(1)
        both = np.vstack([front_F, F])
        nd = both[_nondominated(both)]
        lo, hi = nd.min(0), nd.max(0)
        ref = hi + 0.1 * np.where(hi > lo, hi - lo, 1.0)
        if F.shape[1] == 2:
            gain = hv_improvement_2d(front_F, F, ref)
        else:
            gain = self._hv_improvement_nd(front_F, F, ref, lo, hi)
        if not gain.any():  # nothing improves under this draw: fall back to a random Chebyshev scalarisation
            w = self.rng.dirichlet(np.ones(F.shape[1]))
            return -np.max(w * (F - lo) / np.where(hi > lo, hi - lo, 1.0), axis=1)
        return gain

    def _hv_improvement_nd(self, front_F: np.ndarray, F: np.ndarray, ref: np.ndarray, lo: np.ndarray,
                           hi: np.ndarray) -> np.ndarray:
        base = hypervolume(front_F, ref)
        nd = ~np.any(np.all(front_F[None, :, :] <= F[:, None, :], axis=2), axis=1) & np.all(F < ref, axis=1)
        idx = np.flatnonzero(nd)
        if len(idx) > 256:  # bound the cost: keep the best 256 under a random Chebyshev scalarisation
            w = self.rng.dirichlet(np.ones(F.shape[1]))
            idx = idx[np.argsort(np.max(w * (F[idx] - lo) / np.where(hi > lo, hi - lo, 1.0), axis=1))[:256]]
        gain = np.zeros(len(F))
        for i in idx:
            gain[i] = hypervolume(np.vstack([front_F, F[i]]), ref) - base
        return gain

    def config(self) -> dict[str, Any]:
        return {"n_init": self.n_init, "batch_size": self.batch_size, "temperature": self.temperature,
                "noise": self.noise, "prior_var": self.prior_var, "clip_quantile": self.clip_quantile,
                "max_enumerate": self.max_enumerate, "pool_size": self.pool_size, "n_elite": self.n_elite,
                "pair_scale": self.pair_scale, "pair_grid": list(self.pair_grid),
                "max_pair_features": self.max_pair_features}
