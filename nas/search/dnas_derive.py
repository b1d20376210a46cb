"""Derive a discrete architecture from learnt mixture probabilities, optionally at a latency target.

The argmax of the per-choice probabilities is what DARTS and FBNet return. With a latency target it is a poor pick:
the architecture loss moves the *expected* latency to the target, and the expected value can sit on the target while
every choice point leans slightly one way, so the argmax lands on an extreme (measured on the embedded OFA
Fashion-MNIST supernet: targets at 30 % and 70 % of the price range both derived the smallest or the largest net,
20 % off in the profile's own prices). ``derive_near_target`` instead returns the most probable architecture (the
largest sum of log-probabilities) whose price lies within ``tol`` of the target:

1. candidates: the argmax, plus samples of the learnt distribution sharpened and flattened at a few temperatures
   (and uniform), all priced at once with the expected-latency function on one-hot weights (exactly the discrete
   price, batched);
2. the most probable candidate inside the window (or, if none is, the one nearest the target);
3. hill climbing over single-choice moves: inside the window, the move that raises the log-probability most while
   staying inside; outside, the move that brings the price nearest the target.

The price is the same additive profile price the loss used, so what is matched is the profile's price; how close the
measured latency lands also depends on the profile's own error (``bench/dnas_latency_targets.py`` reports both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from supernets.mixture import SoftArch

__all__ = ["derive_near_target"]

TEMPERATURES = (1.0, 2.0, 4.0, float("inf"))


def _price_rows(latency: Callable[[SoftArch], torch.Tensor], names: Sequence[str], sizes: Sequence[int],
                rows: np.ndarray) -> np.ndarray:
    """Prices of index rows (N, G) through ``latency`` on batched one-hot weights."""
    weights = {}
    for g, (name, n) in enumerate(zip(names, sizes)):
        w = torch.zeros(len(rows), n)
        w[torch.arange(len(rows)), torch.as_tensor(rows[:, g])] = 1.0
        weights[name] = w
    with torch.no_grad():
        return latency(SoftArch("darts", weights)).reshape(-1).double().numpy()


def derive_near_target(probs: Mapping[str, torch.Tensor], choices: Mapping[str, Sequence[Any]],
                       latency: Callable[[SoftArch], torch.Tensor], target: float, *, tol: float = 0.05,
                       n_samples: int = 2048, seed: int = 0, max_moves: int = 200) -> tuple[dict[str, Any], float]:
    """``(picked, price)``: the most probable choice per point whose price is within ``tol`` of ``target``."""
    names = list(probs)
    logp = [np.log(np.clip(probs[k].detach().double().cpu().numpy(), 1e-12, None)) for k in names]
    sizes = [len(lp) for lp in logp]
    rng = np.random.default_rng(seed)
    rows = [np.array([[int(np.argmax(lp)) for lp in logp]])]
    per_t = max(1, n_samples // len(TEMPERATURES))
    for t in TEMPERATURES:
        cols = []
        for lp in logp:
            p = np.ones_like(lp) if np.isinf(t) else np.exp((lp - lp.max()) / t)
            cols.append(rng.choice(len(lp), size=per_t, p=p / p.sum()))
        rows.append(np.stack(cols, axis=1))
    cand = np.unique(np.concatenate(rows), axis=0)

    def score(r: np.ndarray) -> np.ndarray:
        return sum(lp[r[:, g]] for g, lp in enumerate(logp))

    def gap(price: np.ndarray) -> np.ndarray:
        return np.abs(price / float(target) - 1.0)

    price = _price_rows(latency, names, sizes, cand)
    s, d = score(cand), gap(price)
    inside = d <= tol
    best = int(np.argmax(np.where(inside, s, -np.inf))) if inside.any() else int(np.lexsort((-s, d))[0])
    cur, cur_s, cur_d = cand[best].copy(), float(s[best]), float(d[best])
    for _ in range(max_moves):
        moves = []
        for g, n in enumerate(sizes):
            for c in range(n):
                if c != cur[g]:
                    m = cur.copy()
                    m[g] = c
                    moves.append(m)
        if not moves:
            break
        moves_a = np.stack(moves)
        ms, md = score(moves_a), gap(_price_rows(latency, names, sizes, moves_a))
        if cur_d <= tol:
            ok = (md <= tol) & (ms > cur_s + 1e-12)
            if not ok.any():
                break
            j = int(np.argmax(np.where(ok, ms, -np.inf)))
        else:
            j = int(np.lexsort((-ms, md))[0])
            if md[j] >= cur_d - 1e-12:
                break
        cur, cur_s, cur_d = moves_a[j], float(ms[j]), float(md[j])
    picked = {k: choices[k][int(cur[g])] for g, k in enumerate(names)}
    final = float(_price_rows(latency, names, sizes, cur[None, :])[0])
    return picked, final
