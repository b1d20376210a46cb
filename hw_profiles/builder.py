"""The latency lookup-table builder: measure every layer a space can produce on this machine, resumably.

OFA never published how its tables were generated (issues #16 and #37 ask); this follows nn-Meter's profiling
protocol instead: each operator signature is built in isolation (``build_layer``, injected by the caller, e.g.
``supernets.static.build_layer``; this package never imports supernets), run with fixed threads, warmed up, then
timed ``repeats`` times interleaved with the other layers of its chunk (:func:`~hw_profiles.backends.time_interleaved`).

Corrections that make the per-layer sum predict whole networks:

1. *Cache context*: a layer run back to back keeps its weights, code and branch history hot and runs markedly faster
   than inside a network, so every round of a chunk also runs a fixed reference network of the space
   (``build_network``, injected) and each layer is timed in the state a network leaves the machine in.
2. *Drift normalisation*: on a shared machine the speed of everything drifts by 10% or more over minutes. The
   reference network is timed in the same rounds; each chunk's times are rescaled by (reference median when the
   profile was started) / (reference median in this chunk), stored as ``meta.reference_ms``, so a profile built over
   an hour, or resumed another day, is in one consistent unit.
3. *Per-call overhead*: runtimes such as ONNX Runtime charge a fixed cost per ``run`` call that a network pays once but
   isolated layers pay each; it is timed on a trivial graph in the same rounds, subtracted from every layer, and
   stored once as ``meta.network_overhead``.
4. *Calibration* (on by default): ``calibration_nets`` networks spanning the space are timed end to end at the end
   of the build, in freshly spawned Python processes (``calibration_process="fresh"``, 3 pooled: a long-lived
   process that has loaded a supernet or trained times the same networks 5-45 % slower than a fresh one on this
   project's VM, and a user's exported net runs in a fresh process), and a map from (drift-normalised) layer sums
   to their raw end-to-end time is fitted and stored as ``meta.calibration`` (:mod:`hw_profiles.calibration`),
   applied when pricing: priced networks are in the raw time of the machine at the end of the build, not in the
   reference unit (the reference's drift is recorded).
Each entry stores the median, mean, standard deviation and count. The profile file is rewritten atomically after
every chunk, and a rerun skips every key already in the file, so an interrupted build resumes where it stopped.
"""
from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hw_profiles.backends import CLOCKS, ORDERS, TimingBackend, create_backend, time_interleaved, time_networks
from hw_profiles.calibration import calibration_archs, fit_calibration, machine_conditions, op_sums
from hw_profiles.opmodel import with_fallback
from hw_profiles.pricing import restrict_resolutions, space_layer_specs
from hw_profiles.profile import Entry, HardwareProfile, ProfileFormatError, ProfileMeta
from hw_profiles.timing import (
    RunPlan,
    pass_spread,
    pilot_plan,
    pin_cpus,
    run_spread,
    timing_advice,
    warn_if_noisy,
    warn_if_unsteady,
)
from search_spaces.base import SearchSpace, create_space
from search_spaces.errors import BadInputError
from search_spaces.layers import LayerSpec

__all__ = ["MeasureConfig", "BuildResult", "build_profile", "build_from_config", "input_shape", "measure_modules",
           "profile_path", "profile_for_space", "pass_estimate", "ESTIMATES",
           "reference_network", "cpu_name", "level_change", "speed_ratio"]


_CLOCK_TEXT = {"wall": "wall clock (perf_counter_ns)", "cpu": "CPU time of the calling thread (thread_time_ns)"}


@dataclass(frozen=True)
class MeasureConfig:
    """How layers are timed: runtime (``BACKENDS`` name), threads, batch, warm-up and timed runs, chunk size."""

    runtime: str = "torch"
    threads: int = 1
    batch: int = 1
    warmup: int = 10
    repeats: int = 30
    chunk: int = 16
    seed: int = 0
    clock: str = "wall"
    context: bool = True
    normalise: bool = True
    calibration_nets: int = 8
    #: pin the process to one CPU while measuring (hw_profiles.timing.pin_cpus)
    pin: bool = False
    #: choose warm-up and timed runs from a pilot run of the reference network (``warmup``/``repeats`` become the
    #: minimum), so the medians' standard error is ~1% of them (hw_profiles.timing.plan_runs)
    adaptive: bool = False
    #: where the calibration networks are timed: ``fresh`` (a spawned interpreter, as a user's process meets the
    #: network) or ``builder`` (this process)
    calibration_process: str = "fresh"
    #: fresh processes the calibration networks are timed in (their runs pooled): each is one draw of the
    #: process-level speed
    calibration_processes: int = 3
    #: times every layer is measured, each pass in a fresh shuffle (other chunk mates, minutes apart), the runs of
    #: all passes pooled: a burst of load on a shared machine or a chunk's cache state then moves one pass, not the
    #: entry
    passes: int = 1
    #: how the calibration networks are timed: ``interleaved`` round-robin (load drift spread over all alike) or
    #: ``blocked``, each alone as a deployed model runs (what decides a 0.1 ms network: it ran 22 % faster alone than
    #: interleaved with nine others here, so hw=local_cpu_int8 uses it); validation times the same way
    calibration_order: str = "interleaved"
    #: how a figure timed in several passes (layers: ``passes``; calibration networks: ``calibration_processes``;
    #: validation: its passes) is read: ``pooled`` (the median of all runs) or ``fastest`` (the median of the
    #: fastest pass: load from others only ever slows a run, so the least disturbed pass is the machine's own speed;
    #: for a machine whose speed halves for seconds at a time, as this shared VM's did for 0.1 ms int8 networks)
    estimate: str = "pooled"

    def __post_init__(self) -> None:
        if self.estimate not in ESTIMATES:
            raise BadInputError(f"MeasureConfig.estimate must be one of {list(ESTIMATES)}, got {self.estimate!r}")
        if self.calibration_order not in ORDERS:
            raise BadInputError(f"MeasureConfig.calibration_order must be one of {list(ORDERS)}, got "
                                f"{self.calibration_order!r}")
        if self.calibration_process not in ("fresh", "builder"):
            raise BadInputError(f"MeasureConfig.calibration_process must be 'fresh' or 'builder', got "
                                f"{self.calibration_process!r}")
        if self.clock not in CLOCKS:
            raise BadInputError(f"MeasureConfig.clock must be one of {sorted(CLOCKS)}, got {self.clock!r}")
        if self.normalise and not self.context:
            raise BadInputError("MeasureConfig.normalise=True times the context network: it needs context=True")
        if self.clock == "cpu" and self.threads != 1:
            raise BadInputError(f"clock='cpu' times the calling thread only, so it needs threads=1, got {self.threads}")
        for name in ("threads", "batch", "repeats", "chunk", "calibration_processes", "passes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise BadInputError(f"MeasureConfig.{name} must be an int >= 1, got {getattr(self, name)!r}")
        for name in ("warmup", "calibration_nets"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise BadInputError(f"MeasureConfig.{name} must be an int >= 0, got {getattr(self, name)!r}")

    def method(self) -> str:
        runs = ("warm-up and timed runs chosen from a pilot's variance" if self.adaptive else
                f"{self.warmup} warm-up runs, {self.repeats} timed runs")
        return (f"each layer built alone, batch {self.batch}, {self.threads} thread(s), {runs} "
                f"interleaved round-robin within chunks of {self.chunk} layers; "
                + (f"{self.passes} passes in fresh shuffles, "
                   + ("runs pooled; " if self.estimate == "pooled" else "the fastest pass's runs; ")
                   if self.passes > 1 else "")
                + f"{_CLOCK_TEXT[self.clock]}; value = median"
                + ("; a fixed reference network of the space runs in every round as cache context" if self.context
                   else "")
                + ("; times normalised to the reference network's first-chunk median" if self.normalise else "")
                + (f"; network-level calibration (layer sums -> end-to-end time) fitted on {self.calibration_nets} "
                   "networks spanning the space (smallest, middle, largest, random)" if self.calibration_nets else "")
                + ("; calibration networks timed each alone" if self.calibration_nets
                   and self.calibration_order == "blocked" else ""))


@dataclass(frozen=True)
class BuildResult:
    """Where the profile went, which keys this run measured, and how many were already there."""

    path: Path
    measured: tuple[str, ...]
    skipped: int
    total: int
    profile: HardwareProfile = field(repr=False)
    #: ``recalibrate``: the calibration networks' time now / when the table was last calibrated (geometric mean)
    level_change: float | None = None


def input_shape(spec: LayerSpec, batch: int = 1) -> tuple[int, ...]:
    """Input tensor shape of a layer built alone (:meth:`LayerSpec.input_shape`)."""
    return spec.input_shape(batch)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def measure_modules(backend: TimingBackend, modules: Sequence[tuple[Any, tuple[int, ...]]], *, warmup: int,
                    repeats: int, seed: int = 0, clock: str = "wall",
                    extra: Sequence[tuple[Any, tuple[int, ...]]] = (), order: str = "interleaved") -> np.ndarray:
    """Milliseconds, shape (len(modules), repeats), of (module, input shape) pairs timed interleaved (or each alone,
    ``order="blocked"``).

    ``extra`` modules run in the same rounds (e.g. a context network) but their times are not returned.
    """
    with backend.session():
        runners = [backend.prepare(m, shape) for m, shape in [*modules, *extra]]
        return time_networks(runners, order=order, warmup=warmup, repeats=repeats, seed=seed,
                             clock=clock)[: len(modules)]


def _measure_child(runtime: str, threads: int, modules: Sequence[tuple[Any, tuple[int, ...]]], warmup: int,
                   repeats: int, seed: int, clock: str, order: str) -> np.ndarray:
    return measure_modules(create_backend(runtime, threads=threads), modules, warmup=warmup, repeats=repeats,
                           seed=seed, clock=clock, order=order)


def measure_modules_fresh(runtime: str, threads: int, modules: Sequence[tuple[Any, tuple[int, ...]]], *, warmup: int,
                          repeats: int, seed: int = 0, clock: str = "wall", order: str = "interleaved") -> np.ndarray:
    """:func:`measure_modules` in a freshly spawned Python interpreter (nothing of this process's heap, threads or
    caches), the modules sent over by pickling. Raises what the child raised, or ``OSError``/``BrokenProcessPool``
    when the child cannot start."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure_child, runtime, threads, list(modules), warmup, repeats, seed, clock,
                           order).result()


Module = tuple[Any, tuple[int, ...]]


def _measure_chunk(backend: TimingBackend, chunk: Sequence[LayerSpec], config: MeasureConfig, seed: int,
                   build_layer: Callable[[LayerSpec], Any], reference: Module | None,
                   ) -> tuple[np.ndarray, float, float]:
    """Layer times (call overhead subtracted), per-call overhead (0 if none), reference median (0 if none)."""
    with backend.session():
        runners = [backend.prepare(build_layer(s), input_shape(s, config.batch)) for s in chunk]
        overhead = backend.overhead_runner(config.batch)
        extra = ([backend.prepare(*reference)] if reference is not None else []) + ([overhead] if overhead else [])
        times = time_interleaved(runners + extra, warmup=config.warmup, repeats=config.repeats, seed=seed,
                                 clock=config.clock)
    n = len(chunk)
    ref = float(np.median(times[n])) if reference is not None else 0.0
    if overhead is None:
        return times[:n], 0.0, ref
    call = float(np.median(times[-1]))
    # never below a hundredth of the raw reading: a layer is not free
    return np.maximum(times[:n] - call, times[:n] / 100), call, ref


def _plan(backend: TimingBackend, config: MeasureConfig, module: Module) -> tuple[MeasureConfig, RunPlan]:
    """Warm-up and repeats from a pilot run of ``module`` (never below the configured ones)."""
    with backend.session():
        plan = pilot_plan(backend.prepare(*module), runs=max(20, config.warmup + 10), clock=config.clock)
    warn_if_noisy(plan.spread, what="pilot run of the reference network")
    return replace(config, warmup=max(config.warmup, plan.warmup), repeats=max(config.repeats, plan.repeats)), plan


def reference_network(space: SearchSpace, config: MeasureConfig,
                      build_network: Callable[[list[LayerSpec]], Any]) -> tuple[Module, Any]:
    """The fixed reference network of a build: ((module, input shape), arch), from ``config.seed``."""
    arch = space.sample(np.random.default_rng([config.seed, 2]))
    layers = space.layers(arch)  # type: ignore[attr-defined]
    return (build_network(layers), input_shape(layers[0], config.batch)), arch


def _normalise(profile: HardwareProfile, ref: float, arch: Any) -> tuple[HardwareProfile, float]:
    """Factor mapping this chunk's times to the profile's reference unit (setting the unit on the first chunk)."""
    if not ref:
        return profile, 1.0
    if not profile.meta.reference_ms:
        arch_id = arch.to_dict() if hasattr(arch, "to_dict") else repr(arch)
        provenance = {**profile.meta.provenance, "reference_arch": arch_id}
        meta = replace(profile.meta, reference_ms=ref, provenance=provenance)
        return replace(profile, meta=meta), 1.0
    return profile, profile.meta.reference_ms / ref


#: how a figure timed in several passes is read (:attr:`MeasureConfig.estimate`, :func:`pass_estimate`)
ESTIMATES = ("pooled", "fastest")


def pass_estimate(passes: Sequence[np.ndarray], estimate: str) -> np.ndarray:
    """The runs a figure timed in several passes is read from: all of them (``pooled``), or the pass with the lowest
    median (``fastest``)."""
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate must be one of {list(ESTIMATES)}, got {estimate!r}")
    if estimate == "pooled":
        return np.concatenate([np.asarray(p, dtype=float) for p in passes])
    return np.asarray(min(passes, key=lambda p: float(np.median(p))), dtype=float)


def _entry(times: np.ndarray) -> Entry:
    return Entry(mean=float(times.mean()), std=float(times.std(ddof=1)) if len(times) > 1 else 0.0,
                 count=int(len(times)), median=float(np.median(times)))


def _start(out: Path, meta: ProfileMeta) -> HardwareProfile:
    if not out.exists():
        return HardwareProfile(meta)
    old = HardwareProfile.load(out)
    for name in ("runtime", "runtime_version", "threads", "batch", "units", "method"):
        if getattr(old.meta, name) != getattr(meta, name):
            raise ProfileFormatError(
                f"{out} was measured with {name}={getattr(old.meta, name)!r}, this run uses "
                f"{getattr(meta, name)!r}; resume only with the same settings or write to another path"
            )
    return old


def build_profile(space: SearchSpace, out: str | Path, *, build_layer: Callable[[LayerSpec], Any],
                  build_network: Callable[[list[LayerSpec]], Any] | None = None, config: MeasureConfig | None = None,
                  backend: TimingBackend | None = None, name: str = "local_cpu",
                  resolutions: Sequence[int] | None = None, specs: Sequence[LayerSpec] | None = None,
                  progress: Callable[[int, int], None] | None = None, recalibrate: bool = False) -> BuildResult:
    """Measure every layer of ``space`` (or the given ``specs``) missing from the profile at ``out``.

    ``recalibrate``: also re-time the calibration networks of a table that has them and refit the map, so an
    existing table is priced at the machine's speed now (a shared VM's speed moves several % over minutes and
    more between days) without measuring its layers again; the result's ``level_change`` says by how much.

    ``build_network`` (``list[LayerSpec] -> module``) is needed when ``config.context`` is on. ``backend`` overrides
    ``config.runtime`` (tests inject a fake one). Returns what was measured; the file at ``out`` holds every entry
    measured so far even if this call is interrupted.
    """
    config = config or MeasureConfig()
    # a backend object (tests' fakes) cannot be recreated in a fresh process: time calibration here then
    fresh = backend is None and config.calibration_process == "fresh"
    if config.context and build_network is None:
        raise BadInputError("MeasureConfig.context=True needs build_network (e.g. supernets.static.build_network)")
    if recalibrate and (build_network is None or not config.calibration_nets):
        raise BadInputError("recalibrate re-times the calibration networks: it needs build_network and "
                            f"calibration_nets >= 1 (hw.build.calibration_nets), got {config.calibration_nets}")
    backend = backend or create_backend(config.runtime, threads=config.threads)
    # the signatures this runtime actually runs (an int8 runtime: every quantised layer in its int8 form)
    space, build_layer, build_network = backend.forms(space, build_layer, build_network)
    out = Path(out)
    meta = ProfileMeta(name=name, device=cpu_name(), soc=None, runtime=backend.name, runtime_version=backend.version,
                       threads=backend.threads, batch=config.batch, units="ms", method=config.method(),
                       created=datetime.datetime.now().isoformat(timespec="seconds"), space=space.name,
                       host=platform.node() or None)
    profile = _start(out, meta)
    space = restrict_resolutions(space, resolutions)  # context and calibration networks come from the same subset
    wanted = {s.key(): s for s in (specs if specs is not None else space_layer_specs(space))}
    todo = [s for k, s in wanted.items() if k not in profile.entries]
    rng = np.random.default_rng(config.seed)
    # a seeded shuffle mixes layer types within a chunk, like the layers of a network
    todo = [todo[i] for i in rng.permutation(len(todo))]
    reference, ref_arch = (reference_network(space, config, build_network) if build_network is not None
                           and config.context else (None, None))
    pinned = pin_cpus() if config.pin else None
    try:
        return _build(space, out, profile, todo, wanted, reference, ref_arch, backend, config, build_layer,
                      build_network, progress, pinned is not None, fresh=fresh, recalibrate=recalibrate)
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)


def _build(space: SearchSpace, out: Path, profile: HardwareProfile, todo: list[LayerSpec],
           wanted: dict[str, LayerSpec], reference: Module | None, ref_arch: Any, backend: TimingBackend,
           config: MeasureConfig, build_layer: Callable[[LayerSpec], Any],
           build_network: Callable[[list[LayerSpec]], Any] | None, progress: Callable[[int, int], None] | None,
           pinned: bool, fresh: bool, recalibrate: bool = False) -> BuildResult:
    if config.adaptive and todo:
        config, plan = _plan(backend, config, reference or (build_layer(todo[0]), input_shape(todo[0], config.batch)))
        profile = replace(profile, meta=replace(profile.meta, provenance={**profile.meta.provenance,
                                                                          "timing_plan": plan.to_dict()}))
    spreads = []
    runs: dict[str, list[np.ndarray]] = {}  # a layer's normalised runs from every pass so far
    for pas in range(config.passes):
        rng = np.random.default_rng([config.seed, pas])  # pass 0 keeps the build's seeded order
        order = todo if pas == 0 else [todo[i] for i in rng.permutation(len(todo))]
        for start in range(0, len(order), config.chunk):
            chunk = order[start:start + config.chunk]
            times, call, ref = _measure_chunk(backend, chunk, config, config.seed + start + 7919 * pas, build_layer,
                                              reference)
            spreads.append(run_spread(times))
            profile, factor = _normalise(profile, ref if config.normalise else 0.0, ref_arch)
            if call and not profile.meta.network_overhead:
                profile = replace(profile, meta=replace(profile.meta, network_overhead=call * factor))
            for s, t in zip(chunk, times):
                runs.setdefault(s.key(), []).append(t * factor)
            profile = profile.with_entries({s.key(): replace(_entry(pass_estimate(runs[s.key()], config.estimate)),
                                                             runs_as=backend.runs_as(s)) for s in chunk})
            profile.save(out)
            if progress is not None:
                progress(pas * len(todo) + start + len(chunk), config.passes * len(todo))
    measured = [s.key() for s in todo]
    level = None
    if build_network is not None and config.calibration_nets and (measured or profile.meta.calibration is None
                                                                  or recalibrate):
        before = profile.meta.calibration
        calibrated = _calibrate(space, profile, backend, config, build_network, reference, fresh=fresh)
        if calibrated is not profile:
            profile = calibrated
            if recalibrate and before:
                level = level_change(before, profile.meta.calibration)
                history = [*profile.meta.provenance.get("recalibrations", []),
                           {"at": datetime.datetime.now().isoformat(timespec="seconds"), "level_change": level}]
                profile = replace(profile, meta=replace(profile.meta, provenance={**profile.meta.provenance,
                                                                                  "recalibrations": history}))
            profile.save(out)
    if spreads:
        spread = float(np.median(spreads))
        advice = timing_advice(spread, threads=config.threads, clock=config.clock, pinned=pinned)
        timing = {"spread": spread, "pinned": pinned, "advice": advice}
        profile = replace(profile, meta=replace(profile.meta, provenance={**profile.meta.provenance,
                                                                          "timing": timing}))
        warn_if_noisy(spread, what=f"profile {out.name}")
    if measured or (len(profile) >= 2 and "fallback" not in profile.meta.provenance):
        profile = with_fallback(profile)  # the validated model for layers the table never measured
        profile.save(out)
    if not out.exists():
        profile.save(out)
    return BuildResult(out, tuple(measured), len(wanted) - len(todo), len(wanted), profile, level_change=level)


def level_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> float | None:
    """Geometric mean ratio of the calibration networks' measured time in ``after`` to ``before`` (two stored
    ``meta.calibration`` dicts), over the networks both timed; None when they share none."""
    old = {json.dumps(n["arch"], sort_keys=True): n["measured"] for n in before.get("networks", ())}
    pairs = [(n["measured"], old[k]) for n in after.get("networks", ())
             if (k := json.dumps(n["arch"], sort_keys=True)) in old and old[k] > 0]
    return speed_ratio(*zip(*pairs)) if pairs else None


def speed_ratio(now: Sequence[float], then: Sequence[float]) -> float:
    """The machine's speed change read from the same networks timed twice: the geometric mean of ``now / then``
    (what :func:`level_change` and the validation's machine-speed check report)."""
    return float(np.exp(np.mean(np.log(np.asarray(now, float) / np.asarray(then, float)))))


def _arch_dict(space: Any, arch: Any) -> Any:
    """A calibration network's architecture as stored: its own ``to_dict``, else the space's (a joint (arch, policy)
    of a quantised space), so the validation can rebuild it (``space.from_dict``) to check the machine's speed;
    ``repr`` when neither can."""
    if hasattr(arch, "to_dict"):
        return arch.to_dict()
    try:
        return space.to_dict(arch)
    except Exception:  # noqa: BLE001 - a space without serialisation: stored for reading, not rebuilt
        return repr(arch)


def _calibrate(space: SearchSpace, profile: HardwareProfile, backend: TimingBackend, config: MeasureConfig,
               build_network: Callable[[list[LayerSpec]], Any], reference: Module | None,
               fresh: bool) -> HardwareProfile:
    """Time ``config.calibration_nets`` networks spanning the space end to end and store the fitted
    :class:`~hw_profiles.calibration.NetworkCalibration` (``meta.calibration``). With ``fresh``
    (``config.calibration_process == "fresh"`` and the backend created from the config) they are timed
    in ``config.calibration_processes`` spawned interpreters, one after another, and their runs pooled (the
    median of all); each process's level relative to the pool is stored (``conditions["process_levels"]``). If
    that cannot start or the modules cannot be sent, they are timed in this process, with a warning
    (``conditions["process"]`` records which).

    Skipped (the profile is returned unchanged) while some layer of those networks is not measured yet.
    """
    archs = calibration_archs(space, config.calibration_nets, [config.seed, 1])
    nets = [space.layers(a) for a in archs]  # type: ignore[attr-defined]
    if any(s.key() not in profile.entries for layers in nets for s in layers):
        return profile
    modules = [(build_network(layers), input_shape(layers[0], config.batch)) for layers in nets]
    with_ref = reference is not None and config.normalise and profile.meta.reference_ms > 0
    if with_ref:
        modules.append(reference)  # type: ignore[arg-type]
    # a handful of networks set the level of every price: time them more than a layer (>= 30 runs, 3 warm-up)
    runs = {"warmup": max(config.warmup, 3), "repeats": max(config.repeats, 30), "seed": config.seed + 1,
            "clock": config.clock, "order": config.calibration_order}
    process, levels, unsteady = "builder", None, None
    if fresh:
        try:
            # one process is one draw of the process-level speed (fresh processes differ by 2-5 % here): pool several
            parts = [measure_modules_fresh(backend.name, backend.threads, modules, **{**runs, "seed": runs["seed"] + k})
                     for k in range(config.calibration_processes)]
            times = np.concatenate(parts, axis=1)
            pooled = np.median(times, axis=1)
            if config.estimate == "fastest":  # each network's fastest process (its runs; the spread below is theirs)
                times = np.stack([pass_estimate([p[i] for p in parts], "fastest") for i in range(len(times))])
            per_process = np.stack([np.median(p, axis=1) for p in parts], axis=1)  # (networks, processes)
            levels = [round(float(np.median(m / pooled)), 4) for m in per_process.T]
            unsteady = pass_spread(per_process[: len(nets)])
            process = "fresh"
        except Exception as exc:  # noqa: BLE001 - unpicklable modules, no spawn: fall back, say so
            warnings.warn(f"calibration networks could not be timed in a fresh process ({type(exc).__name__}: "
                          f"{exc}); timing them in the builder process", RuntimeWarning, stacklevel=2)
    if process == "builder":
        times = measure_modules(backend, modules, **runs)
    medians = np.median(times, axis=1)
    # no drift normalisation here: the entries are in the unit of the build's first chunk, the calibration maps
    # their sums to the end-to-end time measured now, at the end of the build (closest to the user's use of it)
    drift = float(medians[-1] / profile.meta.reference_ms) if with_ref else None
    medians = medians[: len(nets)]
    sums = [op_sums(layers, [profile.entries[s.key()].value for s in layers]) for layers in nets]
    conditions = machine_conditions(runtime=backend.name, runtime_version=backend.version, threads=backend.threads,
                                    batch=config.batch, clock=config.clock, warmup=config.warmup,
                                    repeats=max(config.repeats, 30), drift_normalised=False, process=process,
                                    processes=len(levels) if levels else 1, process_levels=levels,
                                    reference_drift=drift, order=config.calibration_order, estimate=config.estimate,
                                    spread=run_spread(times[: len(nets)]), process_spread=unsteady)
    networks = [{"arch": _arch_dict(space, a), "sum": round(sum(s.values()), 5),
                 "measured": round(float(m), 5)} for a, s, m in zip(archs, sums, medians)]
    cal = fit_calibration(sums, medians, overhead=profile.meta.network_overhead, conditions=conditions,
                          networks=networks)
    warn_if_noisy(conditions["spread"], what="calibration networks")
    warn_if_unsteady(unsteady, what="calibration networks in their fresh processes")
    return replace(profile, meta=replace(profile.meta, scale=1.0, calibration=cal.to_dict()))


def build_from_config(hw: Mapping[str, Any], *, space: str | SearchSpace, space_kwargs: Mapping[str, Any] | None = None,
                      out: str | Path | None = None, build_layer: Callable[[LayerSpec], Any],
                      build_network: Callable[[list[LayerSpec]], Any] | None = None,
                      progress: Callable[[int, int], None] | None = None, recalibrate: bool = False) -> BuildResult:
    """``python -m nas.profile``: build the profile described by a ``conf/hw`` entry for a named space.

    ``hw`` holds ``name``, ``kwargs`` (``path``: where the profile lives) and ``build`` (a :class:`MeasureConfig`
    plus ``resolutions``); profiles without ``build`` (e.g. ``snapdragon855``, ``macs``) cannot be measured here.
    """
    name, build = hw.get("name"), hw.get("build")
    if not build:
        raise BadInputError(f"hardware profile {name!r} has no 'build' section: it cannot be measured on this machine; "
                            "use a measurable one such as hw=local_cpu (torch) or hw=local_cpu_ort (onnxruntime)")
    build = dict(build)
    resolutions = build.pop("resolutions", None)
    sp = space if isinstance(space, SearchSpace) else create_space(space, **dict(space_kwargs or {}))
    target = out if out is not None else (hw.get("kwargs") or {}).get("path")
    if target is None:
        raise BadInputError(f"no output path: set out=... or hw.kwargs.path for profile {name!r}")
    try:
        config = MeasureConfig(**build)
    except (BadInputError, TypeError) as exc:  # named as the user sets it: hw.build.<key>
        raise BadInputError(str(exc).replace("MeasureConfig.__init__()", "hw.build").replace("MeasureConfig.",
                                                                                              "hw.build.")) from None
    return build_profile(sp, profile_path(target, sp), build_layer=build_layer, build_network=build_network,
                         config=config, name=str(name),
                         resolutions=tuple(resolutions) if resolutions is not None else None, progress=progress,
                         recalibrate=recalibrate)


def profile_path(path: str | Path, space: SearchSpace) -> Path:
    """A profile path with ``{space}`` replaced by the space's name (one measured table per space)."""
    return Path(str(path).replace("{space}", space.name))


def profile_for_space(hw: Mapping[str, Any], space: SearchSpace, *, build_layer: Callable[[LayerSpec], Any],
                      build_network: Callable[[list[LayerSpec]], Any] | None = None,
                      log: Callable[[str], None] = print) -> Path:
    """The profile file of the ``conf/hw`` entry ``hw`` for ``space``; measured now (every layer of the space)
    when the file does not exist yet and the entry can be measured on this machine (it has a ``build`` section)."""
    path = profile_path((hw.get("kwargs") or {}).get("path", ""), space)
    if path.is_file() or not hw.get("build"):
        return path
    build = dict(hw["build"])
    resolutions = build.pop("resolutions", None)
    log(f"{hw.get('name')} profile for space {space.name!r} not found at {path}: measuring it now (first use; "
        f"the same as `python -m nas.profile hw={hw.get('name')} space.name={space.name}`)")
    build_profile(space, path, build_layer=build_layer, build_network=build_network, config=MeasureConfig(**build),
                  name=str(hw.get("name")), resolutions=tuple(resolutions) if resolutions is not None else None)
    return path
