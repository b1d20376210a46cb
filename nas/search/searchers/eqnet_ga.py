"""EQ-Net's genetic search over quantisation policies (Xu et al., ICCV 2023) as ``searcher=eqnet_ga``.

OFA-style elitist evolution (population 100, top 25 % parents, half mutants, half uniform crossovers) restricted to
EQ-Net's *feasibility window* on the average bit-widths: ``c - window < avg <= c`` for the weights
(parameter-weighted) and the activations (input-size-weighted), first and last layers excluded, with ``c`` the
target bits and ``window = 0.5`` (paper: c in {2.9, 3.0, 3.5, ..., 7.0}). Children outside the window are
re-drawn, a bounded number of times (the reference loops can spin forever on tight windows); the first population
is drawn the CQAP way (:mod:`search_spaces.quant_cqap`): targets uniform in the window, per-layer bits from the
probability map. Mutation probability 0.3 is the value the reference search script means to set (its finder reads
another key and runs at 0.1).

``target_bits`` may be left out when the search has a constraint ``avg_bits<=c`` (metric ``avg_w_bits``): its
bound is the target. Selection is the base evolution's: one objective by value, several by NSGA-II rank/crowding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nas.search.searchers.base import SEARCHERS, SearcherConfigError
from nas.search.searchers.baselines import Evolution

__all__ = ["EQNetGA"]


@SEARCHERS.register("eqnet_ga")
class EQNetGA(Evolution):
    """Evolution inside the average-bits window ``c - window < avg <= c`` (weights and activations)."""

    def __init__(self, *, target_bits: float | None = None, window: float = 0.5, population_size: int = 100,
                 parent_ratio: float = 0.25, mutation_ratio: float = 0.5, mutate_prob: float = 0.3,
                 max_rejection_rounds: int = 20, map_seed: int = 0) -> None:
        super().__init__(population_size=population_size, parent_ratio=parent_ratio, mutation_ratio=mutation_ratio,
                         mutate_prob=mutate_prob, max_rejection_rounds=max_rejection_rounds)
        if window <= 0:
            raise SearcherConfigError(f"window must be > 0 bits, got {window}")
        self.target_bits, self.window, self.map_seed = target_bits, float(window), map_seed

    def _setup(self) -> None:
        from search_spaces.quant import JointSpace
        from search_spaces.quant_cqap import build_bit_map

        space = self.problem.space
        if not isinstance(space, JointSpace):
            raise SearcherConfigError(f"searcher eqnet_ga searches quantisation policies; space {space.name!r} is "
                                      "not a joint arch x policy space (e.g. experiment=eqnet_fmnist)")
        self.space: JointSpace = space
        self.c = self._target()
        lo, hi = space.w_bits[0], space.w_bits[-1]
        if not lo < self.c <= hi + 0.5 or self.c - self.window >= hi:
            raise SearcherConfigError(f"target_bits={self.c} leaves no policy in the window ({self.c - self.window}, "
                                      f"{self.c}]: the space's bits are {lo}..{hi}")
        self.bit_map = build_bit_map(space, seed=self.map_seed)
        self._avg: dict[bytes, tuple[float, float]] = {}
        super()._setup()

    def _target(self) -> float:
        if self.target_bits is not None:
            return float(self.target_bits)
        for con in self.problem.constraints:
            if con.name == "avg_w_bits" and con.upper is not None:
                return float(con.upper)
        raise SearcherConfigError("searcher eqnet_ga needs a target average bit-width: searcher.kwargs.target_bits=c "
                                  "or a constraint avg_bits<=c (e.g. constraints=\"['avg_bits<=4']\")")

    def averages(self, X: np.ndarray) -> np.ndarray:
        """(n, 2) average weight and activation bits of encodings ``X`` (cached per encoding)."""
        from search_spaces.quant_costs import average_bits

        view, sp = self.problem.view, self.space
        out = np.zeros((len(X), 2))
        Xc = view.canonical(np.asarray(X))
        for i, (x, key) in enumerate(zip(Xc, view.keys(Xc))):
            if key not in self._avg:
                joint = sp.decode(x)
                self._avg[key] = (average_bits(sp, joint, "w"), average_bits(sp, joint, "a"))
            out[i] = self._avg[key]
        return out

    def in_window(self, X: np.ndarray) -> np.ndarray:
        avg = self.averages(X)
        return np.asarray(((avg > self.c - self.window + 1e-9) & (avg <= self.c + 1e-9)).all(1))

    def _acceptable(self, C: np.ndarray) -> np.ndarray:
        return super()._acceptable(C) & self.in_window(C)

    def ask(self) -> np.ndarray:
        if self.parents is None:
            return self._initial()
        return super().ask()

    def _initial(self) -> np.ndarray:
        """CQAP draws with targets in the window, kept when inside it (bounded retries; fills up with the closest)."""
        view, got, spare = self.problem.view, [], []
        lo = max(self.c - self.window, self.bit_map.lo - 0.4)
        hi = min(self.c, self.space.w_bits[-1])
        for _ in range(self.max_rounds):
            targets = self.rng.uniform(lo, hi, self.population_size)
            X = view.canonical(view.encode([self.bit_map.draw(self.rng, target=float(t)) for t in targets]))
            ok = self._acceptable(X)
            got.append(X[ok])
            spare.append(X[~ok])
            if sum(len(g) for g in got) >= self.population_size:
                break
        X = np.concatenate(got)
        if len(X) < self.population_size:
            rest = np.concatenate(spare)
            dist = np.abs(self.averages(rest) - (self.c - self.window / 2)).max(1)
            X = np.concatenate([X, rest[np.argsort(dist)[: self.population_size - len(X)]]])
        return X[: self.population_size]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "target_bits": self.target_bits, "window": self.window, "map_seed": self.map_seed}
