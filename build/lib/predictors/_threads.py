"""Thread control for the small torch computations of predictors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits

__all__ = ["single_thread"]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops and BLAS/OpenMP calls (numpy, scikit-learn) on one thread; restore the settings after.

    Predictor models are small (a 3 x 400 MLP, a 500 x 500 kernel matrix, an SVR on a few hundred points):
    splitting each op over threads buys little, and on a busy machine the threads' spin-waiting costs 5-30x in
    wall time (measured: a 150-step MLP fit 0.9 s CPU with one thread, 31 s CPU with two on a loaded 2-core host).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)
