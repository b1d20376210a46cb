"""Reliable timing on a shared machine: run-to-run spread, repeats and warm-up from measured variance, pinning.

Guidance (also what :func:`timing_advice` prints):

* Pin the measuring process to one core (``pin_cpus``/``taskset -c N``) and use one intra-op thread: a thread that
  migrates between cores loses its caches, and several threads on a loaded machine wait for the slowest.
* On a machine others use, time with ``clock: cpu`` (the measuring thread's CPU time): preemption by other processes
  is then not counted. It still sees their cache and memory-bandwidth pressure, which is why the spread is checked.
* Repeats and warm-up are chosen from a pilot run (:func:`plan_runs`): warm-up until the first runs settle to the
  median, and enough timed runs that the median's standard error is ``target`` of it.
* The relative spread of repeated runs (inter-quartile range / median, :func:`run_spread`) above ``MAX_SPREAD``
  makes a table untrustworthy at the +-10 % level: :func:`warn_if_noisy` says so, naming the spread and the load.
* Runs back to back can agree while the machine's speed changes between them: on this shared 2-core VM whole
  groups of int8 networks (tens of milliseconds of timing) ran at half speed for seconds at a time (other tenants
  of the host) with a run-to-run spread of 4 %. Timing the same networks in several passes, minutes apart, shows
  it: :func:`pass_spread` of their per-pass medians above ``MAX_SPREAD`` makes :func:`warn_if_unsteady` say so.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_SPREAD", "NoisyTimingWarning", "RunPlan", "run_spread", "warn_if_noisy", "pass_spread",
           "warn_if_unsteady", "plan_runs", "pin_cpus", "timing_advice", "load_summary"]

#: relative inter-quartile range of repeated runs above which a table cannot be trusted to +-10 %
MAX_SPREAD = 0.10


class NoisyTimingWarning(UserWarning):
    """Run-to-run spread too large for a latency table to be trusted."""


def run_spread(times: np.ndarray) -> float:
    """Median over modules of the relative inter-quartile range of each module's repeated runs (shape (m, r))."""
    t = np.atleast_2d(np.asarray(times, dtype=float))
    if t.shape[1] < 2:
        return 0.0
    q1, med, q3 = np.percentile(t, [25, 50, 75], axis=1)
    return float(np.median((q3 - q1) / np.maximum(med, 1e-12)))


def load_summary() -> str:
    """The line the timing warnings carry: load average and CPU count."""
    try:
        return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "load unknown"


def warn_if_noisy(spread: float, *, what: str = "timings", limit: float = MAX_SPREAD) -> bool:
    """Warn (:class:`NoisyTimingWarning`) when ``spread`` exceeds ``limit``; True when it did."""
    if spread <= limit:
        return False
    warnings.warn(
        f"{what}: run-to-run spread {100 * spread:.0f}% (inter-quartile range / median) exceeds {100 * limit:.0f}%; "
        f"a table measured like this cannot be trusted to +-10% ({load_summary()}). Time on an idle machine, pin the "
        "process to one core (taskset -c N), use clock: cpu with threads: 1, or raise repeats.",
        NoisyTimingWarning, stacklevel=2)
    return True


def pass_spread(medians: Sequence[Sequence[float]]) -> float | None:
    """Median over networks of (slowest - fastest) / median of each network's per-pass medians (one row per
    network, one value per pass); None with fewer than two passes."""
    spreads = [(max(m) - min(m)) / max(float(np.median(m)), 1e-12) for m in medians if len(m) >= 2]
    return float(np.median(spreads)) if spreads else None


def warn_if_unsteady(spread: float | None, *, what: str = "timings", limit: float = MAX_SPREAD) -> bool:
    """Warn (:class:`NoisyTimingWarning`) when the same networks ran more than ``limit`` apart between passes
    (:func:`pass_spread`); True when it did."""
    if spread is None or spread <= limit:
        return False
    warnings.warn(
        f"{what}: the same networks ran {100 * spread:.0f}% apart from one pass to the next (median over networks "
        f"of (slowest - fastest pass) / median), above {100 * limit:.0f}%: the machine's speed changed while timing "
        f"(other processes, or other tenants of a shared host), so these figures are unreliable ({load_summary()}). "
        "Time again on a quieter machine, or with more passes.", NoisyTimingWarning, stacklevel=2)
    return True


@dataclass(frozen=True)
class RunPlan:
    """Warm-up and timed runs chosen from a pilot: ``spread`` is the pilot's relative IQR, ``cv`` its robust CV."""

    warmup: int
    repeats: int
    spread: float
    cv: float

    def to_dict(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "repeats": self.repeats, "spread": self.spread, "cv": self.cv}


def plan_runs(pilot: Sequence[float] | np.ndarray, *, target: float = 0.01, min_repeats: int = 5,
              max_repeats: int = 200, settle: float = 0.10) -> RunPlan:
    """Warm-up and repeats from one module's pilot run times (in order, warm-up included).

    Warm-up: the runs before the last one more than ``settle`` away from the median of the second half, plus two.
    Repeats: the standard error of a median is about 1.2533 * sigma / sqrt(n); n makes it ``target`` of the
    median, with sigma the robust standard deviation (IQR / 1.349) of the settled runs.
    """
    t = np.asarray(pilot, dtype=float)
    if t.ndim != 1 or len(t) < 4 or np.any(~np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"a pilot needs >= 4 positive, finite run times, got {t.tolist()}")
    ref = float(np.median(t[len(t) // 2:]))
    far = np.nonzero(np.abs(t[: len(t) // 2] - ref) > settle * ref)[0]
    warmup = int(far[-1]) + 3 if len(far) else 1
    settled = t[min(warmup, len(t) - 2):]
    q1, med, q3 = np.percentile(settled, [25, 50, 75])
    cv = float((q3 - q1) / 1.349 / med)
    repeats = int(np.clip(math.ceil((1.2533 * cv / target) ** 2), min_repeats, max_repeats))
    return RunPlan(warmup=warmup, repeats=repeats, spread=float((q3 - q1) / med), cv=cv)


def pilot_plan(run: Callable[[], Any], *, runs: int = 20, clock: str = "cpu", **kwargs: Any) -> RunPlan:
    """Time ``run`` ``runs`` times on ``clock`` and :func:`plan_runs` from it."""
    from hw_profiles.backends import CLOCKS

    now = CLOCKS[clock]
    times = []
    for _ in range(runs):
        t0 = now()
        run()
        times.append(max(now() - t0, 1) / 1e6)
    return plan_runs(times, **kwargs)


def pin_cpus(cpus: Sequence[int] | None = None) -> list[int] | None:
    """Pin this process to ``cpus`` (default: the last CPU it may use); returns the previous set, None if the OS
    cannot pin (then nothing changed)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    before = sorted(os.sched_getaffinity(0))
    target = set(cpus) if cpus else {before[-1]}
    os.sched_setaffinity(0, target)
    return before


def timing_advice(spread: float, *, threads: int, clock: str, pinned: bool) -> list[str]:
    """Concrete steps that would make these timings more trustworthy (empty when nothing to suggest)."""
    out = []
    if spread > MAX_SPREAD:
        out.append(f"run-to-run spread {100 * spread:.0f}% > {100 * MAX_SPREAD:.0f}%: the table is not trustworthy "
                   f"at +-10% ({load_summary()})")
    if not pinned:
        out.append("pin the process to one core: taskset -c N python -m nas.profile ... (or hw.build.pin: true)")
    if clock != "cpu" and threads == 1:
        out.append("on a shared machine use hw.build.clock=cpu (the measuring thread's CPU time)")
    if threads > 1 and spread > MAX_SPREAD:
        out.append("use hw.build.threads=1: several threads on a loaded machine wait for the slowest")
    return out
