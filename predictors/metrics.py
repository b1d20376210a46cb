"""Ranking and error metrics for accuracy predictors (as reported by DyNAS-T and the NAS predictor literature)."""

from __future__ import annotations

import numpy as np

__all__ = ["kendall_tau", "spearman_rho", "rmse", "top_k_precision", "score"]


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(y_true, dtype=np.float64).reshape(-1), np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"need two equally long arrays of at least 2 values, got {a.shape} and {b.shape}")
    return a, b


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Kendall tau-b (ties handled); 0 when either side is constant."""
    from scipy.stats import kendalltau  # here, not at import: scipy.stats costs every command ~0.6 s

    a, b = _pair(y_true, y_pred)
    tau = kendalltau(a, b)[0]
    return 0.0 if np.isnan(tau) else float(tau)


def spearman_rho(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a, b = _pair(y_true, y_pred)
    rho = spearmanr(a, b)[0]
    return 0.0 if np.isnan(rho) else float(rho)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    a, b = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def top_k_precision(y_true: np.ndarray, y_pred: np.ndarray, frac: float = 0.1) -> float:
    """Share of the truly best ``frac`` of architectures among the predicted best ``frac`` (ties: stable order)."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    a, b = _pair(y_true, y_pred)
    k = max(1, int(round(frac * len(a))))
    best = set(np.argsort(-a, kind="stable")[:k].tolist())
    return len(best.intersection(np.argsort(-b, kind="stable")[:k].tolist())) / k


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """All of the above in one dict (``tau``, ``rho``, ``rmse``, ``top10``)."""
    return {"tau": kendall_tau(y_true, y_pred), "rho": spearman_rho(y_true, y_pred), "rmse": rmse(y_true, y_pred),
            "top10": top_k_precision(y_true, y_pred, 0.1)}
