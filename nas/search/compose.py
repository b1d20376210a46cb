"""A search put together from config groups: accuracy source, objectives with constraints, predictor, searcher.

* ``accuracy``: ``experiment`` (the preset's: a predictor fitted on its measured subnets, or a shipped one),
  ``predictor`` (the ``predictor`` group's model fitted on a measurements CSV) or ``measured`` (BN-recalibrated
  held-out top-1 of a trained supernet checkpoint).
* ``objectives``: named entries, optimised in order (the first is the accuracy the front is ranked by). ``accuracy``
  is the accuracy source, ``cost`` the hardware profile's latency with ``+hw=...`` and MACs without, ``hw`` the
  profile's latency; any other name is a registered objective (:data:`~nas.search.objectives.OBJECTIVES`: ``macs``,
  ``params``, ``model_size``, ``avg_bits``, ``bitops``, ...) or a user's ``module:factory`` returning an Objective.
  Constraints (``constraints=['latency_ms<=0.25']``) name a metric of the search or any registered objective.
* ``searcher``: a registered ask/tell searcher (or ``module:factory``) driven by :func:`~nas.search.loop.run_search`,
  or a search driver from :data:`DRIVERS`. ``linas`` is such a driver: it wraps the inner searcher given in its
  entry (``searcher.inner``) and the ``predictor`` group's model (LINAS rounds, :func:`~nas.search.linas_search`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nas.checks import as_bool, as_int
from nas.experiments import Experiment, create_experiment
from nas.registry import Registry
from nas.resolve import is_spec, plain, resolve, resolve_space
from nas.search.objectives import OBJECTIVES, Constraint, Objective, macs_objective
from nas.search.results import SearchResult
from search_spaces.base import has_capability
from search_spaces.errors import BadInputError

__all__ = ["ComposeError", "DRIVERS", "accuracy_source", "build_objectives", "parse_constraint", "run_driver"]

_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")
DRIVERS: Registry[SearchResult] = Registry("search driver")
log = logging.getLogger(__name__)


class ComposeError(BadInputError):
    """A search config names something that does not exist or cannot work together."""


# -- accuracy ----------------------------------------------------------------------------------------------------
def accuracy_source(cfg: DictConfig) -> Experiment:
    """The search's space and accuracy function, from the ``accuracy`` group (and ``experiment``/``search_space``)."""
    source = str(cfg.accuracy.source)
    space = resolve_space(cfg.search_space) if cfg.get("search_space") else None
    if source == "measured":
        from nas.search.measured import measured_experiment

        return measured_experiment(cfg.accuracy, seed=int(cfg.seed), space_override=space)
    if source == "predictor":
        exp = _experiment(cfg) if space is None else None
        return _fitted(space or exp.space, str(cfg.accuracy.measurements), cfg.predictor, int(cfg.seed), exp)
    if source != "experiment":
        raise ComposeError(f"accuracy.source={source!r}; allowed: experiment, predictor, measured")
    exp = _experiment(cfg)
    if space is not None:
        if cfg.experiment.name != "custom":
            raise ComposeError(_no_accuracy_message(cfg, space, exp))
        exp.space = space
    return exp


def measurement_commands(cfg: DictConfig, space: Any) -> list[str]:
    """The commands that give ``space`` measured accuracies (train, evaluate) and then search on them, as typed."""
    given = plain(cfg.search_space)
    sp = f"search_space=custom search_space.name={given['name']}" if is_spec(str(given["name"])) else \
        f"search_space={given['name']}"
    sp += "".join(f" +search_space.kwargs.{k}={v}" for k, v in _data_geometry(space).items())
    net = f"supernet={space.supernet_name}" if space.supernet_name else "supernet=custom supernet.name=<module:factory>"
    run = f"outputs/train/{space.name}"
    hw = f" +hw={cfg.hw.name}" if cfg.get("hw") else ""
    lines = [f"python -m nas.train {sp} {net} out_dir={run}",
             f"python -m nas.evaluate checkpoint={run} n_random=300 out={run}/measurements.csv"]
    if hw == " +hw=local_cpu":
        geometry = "".join(f" +space.kwargs.{k}={v}" for k, v in _data_geometry(space).items())
        lines.append(f"python -m nas.profile hw=local_cpu space.name={given['name']}{geometry}")
    lines.append(f"python -m nas.search {sp} accuracy=predictor accuracy.measurements={run}/measurements.csv{hw}")
    return lines


def _data_geometry(space: Any) -> dict[str, int]:
    """Fields of the space to set so it takes the default data (Fashion-MNIST: 1 channel, 28 px, 10 classes)."""
    want = {"in_chans": 1, "n_classes": 10, "resolution": 28}
    return {k: v for k, v in want.items() if isinstance(getattr(space, k, None), int) and getattr(space, k) != v
            and not isinstance(type(space).__dict__.get(k), property)}


def _no_accuracy_message(cfg: DictConfig, space: Any, exp: Experiment) -> str:
    commands = "\n  ".join(measurement_commands(cfg, space))
    return (f"search_space={space.name!r} has no accuracy to search with: experiment={cfg.experiment.name} measured "
            f"space {exp.space.name!r} only. Measure yours, then search on the measurements:\n  {commands}\n"
            "(or accuracy=measured accuracy.checkpoint=<trained run>, or experiment=custom "
            "experiment.kwargs.measurements=<csv>)")


def _experiment(cfg: DictConfig) -> Experiment:
    return create_experiment(str(cfg.experiment.name), **plain(cfg.experiment.get("kwargs")))


def _fitted(space: Any, csv: str, predictor: DictConfig, seed: int, base: Experiment | None) -> Experiment:
    """Accuracy from the predictor group's model fitted on a measurements CSV (rows of ``nas.evaluate``)."""
    import numpy as np

    from nas.evaluation import read_measurements
    from predictors import create_predictor

    if not Path(csv).is_file():
        raise ComposeError(f"accuracy.measurements={csv!r} is not a file; give a CSV with arch and top1 columns "
                           "(python -m nas.evaluate writes one)")
    rows = read_measurements(csv, space)
    model = create_predictor(str(predictor.name), space=space, seed=seed, **plain(predictor.get("kwargs")))
    model.fit([r["arch"] for r in rows], np.array([r["top1"] for r in rows], dtype=float))
    return Experiment(name=base.name if base else "predictor", space=space, accuracy=lambda a: model.predict(list(a)),
                      accuracy_note=f"{predictor.name} predictor fitted on {len(rows)} measured subnets in {csv}",
                      supernet_path=base.supernet_path if base else None, data=base.data if base else {})


# -- objectives and constraints ----------------------------------------------------------------------------------
def _hw_objective(space: Any, hw: DictConfig) -> Objective:
    from hw_profiles import HW_PROFILES, create_hw_profile

    if hw.name not in HW_PROFILES:
        raise ComposeError(f"unknown hardware profile {hw.name!r}; available: {HW_PROFILES.names()}")
    if not has_capability(space, "layers"):
        raise ComposeError(f"hardware profile {hw.name!r} prices layers, but space {space.name!r} does not implement "
                           "the 'layers' capability; use the macs objective (no +hw) or give the space layers(arch)")
    kwargs = plain(hw.get("kwargs"))
    _check_float_table(space, hw)
    if "path" in kwargs:  # a measured table of this machine: one per space, measured on first use
        from hw_profiles.builder import profile_for_space
        from supernets.static import build_layer, build_network

        kwargs["path"] = str(profile_for_space(plain(hw), space, build_layer=build_layer, build_network=build_network,
                                               log=log.warning))
    model = create_hw_profile(hw.name, **kwargs)
    if hasattr(model, "check_space"):  # a measured table for another space is refused, not extrapolated
        model.check_space(space)
    units = getattr(model, "units", "ms")
    name = f"latency_{units}" if units in ("ms", "us", "s") else str(hw.name)
    return Objective(name, lambda archs: model(space, archs), "min",
                     fn_x=lambda X: model.evaluate_encoded(space, X).values, model=model,
                     note=getattr(model, "pricing_note", None))


#: runtimes of measured tables that time float layers only
FLOAT_RUNTIMES = ("torch", "onnxruntime")


def _check_float_table(space: Any, hw: DictConfig) -> None:
    """A float table cannot price a quantised space: its keys carry every conv's bits, so a first-use build would
    time a float layer per sampled bit combination (tens of thousands) and still price bits as float."""
    from search_spaces.quant import JointSpace

    runtime = (hw.get("build") or {}).get("runtime")
    if isinstance(space, JointSpace) and runtime in FLOAT_RUNTIMES:
        raise ComposeError(f"hardware profile {hw.name!r} times float layers ({runtime}); space {space.name!r} is "
                           "quantised: use a bit-aware profile (+hw=local_cpu_int8: ONNX Runtime int8 kernels) or "
                           "no +hw (MACs; model_size and avg_bits are exact objectives)")


def _objective(entry: Any, key: str, cfg: DictConfig, exp: Experiment) -> Objective:
    name, kwargs = str(entry.get("name", key)), plain(entry.get("kwargs"))
    if name == "accuracy":
        return Objective(kwargs.get("name", "top1"), exp.accuracy, "max", expensive=True)
    if name == "cost":
        return _hw_objective(exp.space, cfg.hw) if cfg.get("hw") else macs_objective(exp.space, name="macs_M")
    if name == "hw":
        if not cfg.get("hw"):
            raise ComposeError(f"objectives.{key} is the hardware latency, but no profile is given; add +hw=<name>")
        return _hw_objective(exp.space, cfg.hw)
    if not is_spec(name) and name not in OBJECTIVES:
        raise ComposeError(f"objectives.{key}.name={name!r}; allowed: accuracy, cost, hw, a registered objective "
                           f"({', '.join(OBJECTIVES.names())}) or 'package.module:factory'")
    return resolve(name, OBJECTIVES, Objective, key=f"objectives.{key}.name", space=exp.space, **kwargs)


def build_objectives(cfg: DictConfig, exp: Experiment) -> tuple[list[Objective], dict[str, Objective]]:
    """(objectives in order, every metric a constraint may name: the objectives plus ``macs_M``)."""
    objectives = [_objective(entry, str(key), cfg, exp) for key, entry in cfg.objectives.items()]
    metrics = {o.name: o for o in objectives}
    if "macs_M" not in metrics and callable(getattr(exp.space, "macs", None)):
        metrics["macs_M"] = macs_objective(exp.space, name="macs_M")
    return objectives, metrics


def parse_constraint(text: str, metrics: dict[str, Objective], space: Any = None) -> Constraint:
    """``"latency_ms<=25"`` -> a constraint on a metric of the search, or on a registered objective (``params<=1``)."""
    m = _CONSTRAINT.match(text)
    if not m:
        raise ComposeError(f"constraint {text!r} must look like 'name<=value' or 'name>=value'")
    name, op, value = m.group(1), m.group(2), float(m.group(3))
    if name in metrics:
        metric = metrics[name]
    elif name in OBJECTIVES and space is not None:
        metric = OBJECTIVES.create(name, space=space)
        metric = metrics.get(metric.name, metric)  # 'macs' names the macs_M metric the search may already have
    else:
        raise ComposeError(f"constraint on {name!r}, but this search provides {sorted(metrics)} and the registered "
                           f"objectives are {OBJECTIVES.names()}; add a hardware profile (+hw=...) for latency "
                           "constraints")
    return Constraint.on(metric, **({"upper": value} if op == "<=" else {"lower": value}))


# -- searcher ----------------------------------------------------------------------------------------------------
def run_driver(cfg: DictConfig, exp: Experiment, objectives: list[Objective], constraints: list[Constraint],
               out: Path, progress: Callable[..., None] | None = None) -> SearchResult:
    """Search with the ``searcher`` entry: a registered driver (``linas``) or an ask/tell searcher."""
    name = str(cfg.searcher.name)
    if name in DRIVERS:
        return DRIVERS.get(name)(cfg=cfg, exp=exp, objectives=objectives, constraints=constraints, out=out)
    from nas.search.loop import run_search
    from nas.search.searchers import SEARCHERS, Searcher

    searcher: Any = name
    kwargs = plain(cfg.searcher.get("kwargs"))
    if is_spec(name):
        searcher, kwargs = resolve(name, SEARCHERS, Searcher, key="searcher.name", **kwargs), {}
    elif name not in SEARCHERS:
        raise ComposeError(f"searcher.name={name!r}; allowed: {', '.join(SEARCHERS.names() + DRIVERS.names())} or "
                           "'package.module:factory'")
    return run_search(exp.space, objectives, constraints, searcher, budget=as_int(cfg.budget, "budget", minimum=1),
                      seed=as_int(cfg.seed, "seed", minimum=0), out_dir=out, searcher_kwargs=kwargs,
                      resume=as_bool(cfg.resume, "resume"), progress=progress)


@DRIVERS.register("linas")
def linas_driver(*, cfg: DictConfig, exp: Experiment, objectives: list[Objective], constraints: list[Constraint],
                 out: Path) -> SearchResult:
    """LINAS rounds around the injected inner searcher (``searcher.inner``) and predictor (``predictor`` group)."""
    from nas.search.linas import linas_search
    from predictors import create_predictor

    sc, space, seed = cfg.searcher, exp.space, int(cfg.seed)
    inner = sc.get("inner")
    if inner is None or str(inner.name) == "linas":
        raise ComposeError("searcher=linas needs searcher.inner.name=<an ask/tell searcher>, e.g. pymoo_nsga2")
    kw, pred = plain(sc.get("kwargs")), cfg.predictor
    return linas_search(space, objectives, constraints,
                        predictor_factory=lambda: create_predictor(str(pred.name), space=space, seed=seed,
                                                                   **plain(pred.get("kwargs"))),
                        rounds=int(kw.get("rounds", 5)), batch_size=int(kw.get("batch_size", 20)),
                        inner_searcher=str(inner.name), inner_kwargs=plain(inner.get("kwargs")),
                        inner_budget=int(cfg.budget), seed=seed, out_dir=out, resume=bool(cfg.resume)).result
