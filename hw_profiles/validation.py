"""Validation of a saved profile as a user meets it: a separate process times random subnets end to end.

:func:`validate_profile` starts a fresh Python process that shares nothing with the builder (no reference network,
no warm caches, no module objects): it loads the saved profile file, samples ``nets`` seeded random subnets of the
space (seeds disjoint from the builder's), builds each whole network, times it on the profile's runtime, threads and
batch, and compares the measured medians with the profile's predictions. With ``passes`` > 1 every subnet is timed
in that many passes, each over a fresh shuffle of the subnets into groups (other group mates, minutes apart), and
its runs are pooled before the median (or, as a table built with ``estimate="fastest"`` reads its passes, its
fastest pass's runs are kept), so a load burst during one group moves one pass of its subnets and not their figure
(as the builder's ``passes`` do for table entries). Each group's networks are freed before the next group is built.
No drift normalisation is applied: these are the numbers a user would see. The report holds, for the calibrated
predictions (what pricing returns) and for the uncalibrated layer sums, the fraction within +-5 % / +-10 %, RMSPE
and mean bias (nn-Meter's metrics).

The machine's speed now against its speed when the table was calibrated: at the start of every pass the worker also
times the profile's calibration networks (stored with their measured times), read as the subnets are. Their geometric
mean ratio now / then is ``machine_speed``; ``calibrated_at_speed`` holds the figures with the predictions scaled by
it. Together they tell a table that is wrong from a machine that changed speed since it was built (on a shared VM
other tenants move it 10-15 % for minutes): beyond +-5 % :func:`validate_profile` warns and names
``recalibrate=true``, which re-times those networks and refits the map in seconds.

The network builder is named as ``module:function`` (default ``supernets.static:build_network``) and imported only
inside the worker, so this package never imports ``supernets``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hw_profiles.backends import ORDERS
from hw_profiles.builder import ESTIMATES
from hw_profiles.timing import NoisyTimingWarning, load_summary, warn_if_unsteady

__all__ = ["validate_profile", "error_stats", "pass_groups", "warn_if_machine_changed", "ValidationError",
           "DEFAULT_NETWORK_BUILDER", "MAX_SPEED_CHANGE"]

DEFAULT_NETWORK_BUILDER = "supernets.static:build_network"
#: beyond this change of the machine's speed since calibration (either way) the validation warns
MAX_SPEED_CHANGE = 0.05
_ROOT = Path(__file__).resolve().parents[1]


class ValidationError(RuntimeError):
    """The validation process failed; the message carries its error output."""


def error_stats(pred: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray) -> dict[str, float]:
    """nn-Meter's accuracy figures of predictions against measurements."""
    rel = (np.asarray(pred, float) - np.asarray(measured, float)) / np.asarray(measured, float)
    return {"within5": float(np.mean(np.abs(rel) <= 0.05)), "within10": float(np.mean(np.abs(rel) <= 0.10)),
            "rmspe": float(np.sqrt(np.mean(rel**2))), "bias": float(np.mean(rel)), "n": int(len(rel))}


def validate_profile(profile: str | Path, space: str, space_kwargs: Mapping[str, Any] | None = None, *,
                     nets: int = 100, seed: int = 0, warmup: int = 3, repeats: int = 10, group: int = 10,
                     passes: int = 1, clock: str | None = None, order: str | None = None,
                     estimate: str | None = None,
                     network_builder: str = DEFAULT_NETWORK_BUILDER,
                     timeout: float | None = None, archs: Sequence[str] | None = None) -> dict[str, Any]:
    """Time ``nets`` random subnets of ``space`` in a separate process and compare with the profile at ``profile``.

    ``archs``: architecture ids (``space.from_id``) to time instead of random subnets (e.g. the ones a search
    derived), in that order.

    ``clock``, ``order`` (interleaved or each net alone, see :data:`~hw_profiles.backends.ORDERS`) and ``estimate``
    (a subnet's runs of all passes pooled, or its fastest pass: :func:`~hw_profiles.builder.pass_estimate`) default
    to how the profile's calibration networks were timed and read (``wall``, ``interleaved``, ``pooled`` if none).
    Returns a dict with ``calibrated`` and ``uncalibrated`` :func:`error_stats`, the per-subnet ``measured`` /
    ``predicted`` / ``uncalibrated`` milliseconds, the run-to-run ``spread``, the ``pass_spread`` of the subnets'
    per-pass medians (:func:`~hw_profiles.timing.pass_spread`, None with one pass; above 10 % it warns that the
    machine's speed changed while timing), ``machine_speed`` (the calibration networks' time now / at calibration,
    None for a profile without stored calibration networks; beyond +-5 % it warns), ``calibrated_at_speed`` (the
    calibrated figures with the predictions scaled by it) and the measurement conditions.
    """
    request = {"profile": str(Path(profile).resolve()), "space": space, "space_kwargs": dict(space_kwargs or {}),
               "nets": int(nets), "seed": int(seed), "warmup": int(warmup), "repeats": int(repeats),
               "group": int(group), "passes": int(passes), "clock": clock, "order": order, "estimate": estimate,
               "network_builder": network_builder,
               "archs": None if archs is None else [str(a) for a in archs]}
    if archs is not None and not archs:
        raise ValueError("archs, when given, must name at least one architecture")
    if estimate is not None and estimate not in ESTIMATES:
        raise ValueError(f"estimate must be one of {list(ESTIMATES)} (or None: as the profile's calibration), got "
                         f"{estimate!r}")
    if order is not None and order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)} (or None: as the profile's calibration), got {order!r}")
    if nets < 1 or repeats < 1 or group < 1 or passes < 1 or warmup < 0:
        raise ValueError(f"need nets, repeats, group, passes >= 1 and warmup >= 0, got {request}")
    with tempfile.TemporaryDirectory(prefix="nas-validate-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "report.json"
        req.write_text(json.dumps(request))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])}
        code = "import sys; from hw_profiles.validation import _worker; _worker(sys.argv[1], sys.argv[2])"
        proc = subprocess.run([sys.executable, "-c", code, str(req), str(out)], env=env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            raise ValidationError(f"validation process exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        report = json.loads(out.read_text())
    warn_if_unsteady(report.get("pass_spread"), what=f"validation of {Path(profile).name}")
    warn_if_machine_changed(report.get("machine_speed"), profile=Path(profile).name,
                            at=report.get("calibrated_at_time"))
    return report


def warn_if_machine_changed(speed: float | None, *, profile: str = "the profile", at: str | None = None,
                            limit: float = MAX_SPEED_CHANGE) -> bool:
    """Warn (:class:`~hw_profiles.timing.NoisyTimingWarning`) when the calibration networks took more than
    ``limit`` longer or shorter than when ``profile`` was calibrated; True when they did."""
    if speed is None or abs(speed - 1.0) <= limit:
        return False
    warnings.warn(
        f"validation of {profile}: its calibration networks took {speed:.2f}x their time at calibration"
        f"{f' ({at})' if at else ''}: this machine's speed changed since the table was built (other processes or "
        f"tenants of a shared host, clock or power settings), so every prediction is off by about "
        f"{100 * (speed - 1):+.0f}% before any error of the table itself ({load_summary()}). If this persists, re-time "
        "them: python -m nas.profile hw=<the profile's hw> recalibrate=true (seconds; the layers are kept).",
        NoisyTimingWarning, stacklevel=2)
    return True


def pass_groups(n: int, group: int, passes: int, seed: int = 0) -> list[np.ndarray]:
    """The groups the subnets ``0..n-1`` are timed in, pass after pass: pass 0 in the given order, every later pass
    over a fresh seeded shuffle, so each subnet is timed once per pass beside other group mates."""
    out = []
    for p in range(passes):
        order = np.arange(n) if p == 0 else np.random.default_rng([seed, 24, p]).permutation(n)
        out += [order[start:start + group] for start in range(0, n, group)]
    return out


def _calibration_networks(space: Any, calibration: Mapping[str, Any]) -> list[tuple[Any, float]]:
    """The profile's calibration networks as (architecture of ``space``, measured ms); empty when it stores none or
    they are not architectures of this space (a profile of another space, a hand-written calibration)."""
    out = []
    for n in calibration.get("networks", ()):
        try:
            arch = space.from_dict(n["arch"]) if isinstance(n.get("arch"), dict) else None
        except Exception:  # noqa: BLE001 - any unreadable entry: no speed check rather than a failed validation
            return []
        if arch is None or not float(n.get("measured", 0)) > 0:
            return []
        out.append((arch, float(n["measured"])))
    return out


def _worker(request_path: str, out_path: str) -> None:
    """Body of the separate validation process (see :func:`validate_profile`)."""
    import importlib

    from hw_profiles.backends import create_backend, time_networks
    from hw_profiles.builder import pass_estimate, speed_ratio
    from hw_profiles.calibration import machine_conditions
    from hw_profiles.latency import LatencyModel
    from hw_profiles.profile import HardwareProfile
    from hw_profiles.timing import pass_spread, run_spread
    from search_spaces.base import create_space

    req = json.loads(Path(request_path).read_text())
    profile = HardwareProfile.load(req["profile"])
    meta = profile.meta
    cal_conditions = (meta.calibration or {}).get("conditions", {})
    clock = req["clock"] or cal_conditions.get("clock", "wall")
    order = req.get("order") or cal_conditions.get("order", "interleaved")  # as the calibration networks were
    estimate = req.get("estimate") or cal_conditions.get("estimate", "pooled")  # read as the calibration's were
    module, _, fn = req["network_builder"].partition(":")
    build_network = getattr(importlib.import_module(module), fn)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in req["space_kwargs"].items()}  # JSON lists
    space = create_space(req["space"], **kwargs)
    if req.get("archs"):
        archs = [space.from_id(a) for a in req["archs"]]
    else:
        rng = np.random.default_rng([req["seed"], 24])  # disjoint from the builder's seeds
        archs = [space.sample(rng) for _ in range(req["nets"])]
    backend = create_backend(meta.runtime, threads=meta.threads or 1)
    # the space as the runtime runs it (an int8 runtime: quantised layers in their int8 form, as its table holds)
    space, _, build_network = backend.forms(space, build_network, build_network)

    def timed(group: list[Any], seed: int) -> list[np.ndarray]:
        layers = [space.layers(a) for a in group]
        with backend.session():
            runners = [backend.prepare(build_network(ls), ls[0].input_shape(meta.batch)) for ls in layers]
            times = time_networks(runners, order=order, warmup=req["warmup"], repeats=req["repeats"], seed=seed,
                                  clock=clock)
        # a group's sessions are freed before the next group is built, as a user's process holds one model: with
        # the last group still alive while the next was built, this process ran the same int8 nets 5-30 % slower
        # after some 100 sessions (ONNX Runtime, 0.1 ms nets), which the calibration, timed in fresh processes,
        # never saw
        del runners
        gc.collect()
        return times

    reference = _calibration_networks(space, meta.calibration or {})
    ref_runs: list[list[np.ndarray]] = [[] for _ in reference]
    runs: list[list[np.ndarray]] = [[] for _ in archs]
    spreads = []
    per_pass = -(-len(archs) // req["group"])
    for k, idx in enumerate(pass_groups(len(archs), req["group"], int(req.get("passes", 1)), req["seed"])):
        if reference and k % per_pass == 0:  # the machine's speed, once per pass
            for j, t in enumerate(timed([a for a, _ in reference], seed=10_000 + k)):
                ref_runs[j].append(t)
        times = timed([archs[i] for i in idx], seed=k)
        for i, t in zip(idx, times):
            runs[i].append(t)
        spreads.append(run_spread(times))
    medians = [float(np.median(pass_estimate(r, estimate))) for r in runs]
    speed = None
    if reference:
        speed = speed_ratio([float(np.median(pass_estimate(r, estimate))) for r in ref_runs],
                            [m for _, m in reference])
    steadiness = pass_spread([[float(np.median(t)) for t in r] for r in runs])
    model = LatencyModel.from_profile(profile)
    batch = model.evaluate_many(space, archs)
    pred = batch.values
    plain = np.array([sum(profile.entries[s.key()].value if s.key() in profile.entries else np.nan
                          for s in space.layers(a)) for a in archs]) + meta.network_overhead
    measured = np.asarray(medians)
    known = np.isfinite(plain)
    report = {"profile": req["profile"], "space": space.name, "nets": len(archs), "clock": clock,
              "measured": measured.tolist(), "predicted": pred.tolist(), "uncalibrated": plain.tolist(),
              "fallback_layers": int(batch.n_modelled.sum()), "runs_per_net": [int(sum(map(len, r))) for r in runs],
              "calibrated": error_stats(pred, measured),
              "machine_speed": speed,
              "calibrated_at_speed": error_stats(pred * speed, measured) if speed is not None else None,
              "calibrated_at_time": cal_conditions.get("time"),
              "uncalibrated_stats": error_stats(plain[known], measured[known]) if known.any() else {},
              "spread": float(np.median(spreads)), "pass_spread": steadiness,
              "conditions": machine_conditions(runtime=backend.name, runtime_version=backend.version,
                                               threads=backend.threads, batch=meta.batch, clock=clock,
                                               warmup=req["warmup"], repeats=req["repeats"],
                                               passes=int(req.get("passes", 1)), order=order, estimate=estimate,
                                               pid=os.getpid())}
    Path(out_path).write_text(json.dumps(report))
