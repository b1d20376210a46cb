"""The ``python -m nas.search`` application: config -> objectives -> searcher -> printed front + results dir.

Objectives: accuracy (the experiment's predictor, or real supernet evaluation when ``supernet.checkpoint`` is
given) against latency from a hardware profile (``+hw=<name>``) or, without one, against MACs. Constraints are
strings such as ``latency_ms<=25``. The results directory holds the front as CSV/JSON, a Pareto plot, the resolved
config and ``EXPORT.md`` with the command exporting any front point.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nas.experiments import Experiment, create_experiment
from nas.runtime import retain_freed_memory
from nas.search.loop import run_search
from nas.search.objectives import Constraint, Objective, macs_objective
from nas.search.results import SearchResult, atomic_write_text
from search_spaces import SPACES, SearchSpace
from search_spaces.base import has_capability

__all__ = ["SearchOutcome", "search_from_config", "parse_constraint", "front_table", "ConfigError"]

log = logging.getLogger(__name__)
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class ConfigError(ValueError):
    """A search config names something that does not exist or cannot work together."""


@dataclass
class SearchOutcome:
    result: SearchResult
    experiment: Experiment
    out_dir: Path
    table: str
    exported: str | None = None
    notes: tuple[str, ...] = ()


def _kwargs(node: Any) -> dict[str, Any]:
    """The ``kwargs`` mapping of a config group entry as a plain dict (empty when absent)."""
    kw = node.get("kwargs") if node is not None else None
    return dict(OmegaConf.to_container(kw, resolve=True)) if kw is not None else {}  # type: ignore[arg-type]


def parse_constraint(text: str, metrics: dict[str, Objective]) -> Constraint:
    """``"latency_ms<=25"`` -> a constraint on the named metric (which must be one of the search's metrics)."""
    m = _CONSTRAINT.match(text)
    if not m:
        raise ConfigError(f"constraint {text!r} must look like 'name<=value' or 'name>=value'")
    name, op, value = m.group(1), m.group(2), float(m.group(3))
    if name not in metrics:
        raise ConfigError(f"constraint on {name!r}, but this search provides {sorted(metrics)}; add a hardware "
                          "profile (+hw=...) for latency constraints")
    bound = {"upper": value} if op == "<=" else {"lower": value}
    return Constraint.on(metrics[name], **bound)


def _hw_objective(space: SearchSpace, hw: DictConfig) -> Objective:
    from hw_profiles import HW_PROFILES, create_hw_profile

    if hw.name not in HW_PROFILES:
        raise ConfigError(f"unknown hardware profile {hw.name!r}; available: {HW_PROFILES.names()}")
    if not has_capability(space, "layers"):
        raise ConfigError(f"hardware profile {hw.name!r} prices layers, but space {space.name!r} does not implement "
                          "the 'layers' capability; use the macs objective (no +hw) or give the space layers(arch)")
    kwargs = _kwargs(hw)
    if "path" in kwargs:  # a measured table of this machine: one per space, measured on first use
        from hw_profiles.builder import profile_for_space
        from supernets.static import build_layer, build_network

        kwargs["path"] = str(profile_for_space(OmegaConf.to_container(hw, resolve=True), space,  # type: ignore
                                               build_layer=build_layer, build_network=build_network, log=log.warning))
    model = create_hw_profile(hw.name, **kwargs)
    units = getattr(model, "units", "ms")
    name = f"latency_{units}" if units in ("ms", "us", "s") else str(hw.name)
    return Objective(name, lambda archs: model(space, archs), "min",
                     fn_x=lambda X: model.evaluate_encoded(space, X).values, note=getattr(model, "pricing_note", None))


def _custom_space(spec: str, kwargs: dict[str, Any]) -> SearchSpace:
    """``"pkg.module:factory"`` -> import the user's module (which may register supernets too) and call the factory."""
    module, _, attr = spec.partition(":")
    if not attr:
        if spec in SPACES:
            return SPACES.create(spec, **kwargs)
        raise ConfigError(f"search_space.name={spec!r}: give a registered name ({SPACES.names()}) or 'module:factory'")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"search_space={spec!r}: cannot import {attr!r} from {module!r}: {exc}") from None
    space = factory(**kwargs)
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"search_space.name={spec!r} returned {type(space).__name__}, not a SearchSpace")
    return space


def _metrics(cfg: DictConfig, exp: Experiment) -> tuple[list[Objective], dict[str, Objective]]:
    accuracy = Objective("top1", exp.accuracy, "max", expensive=True)
    cost = _hw_objective(exp.space, cfg.hw) if cfg.get("hw") else macs_objective(exp.space, name="macs_M")
    metrics = {accuracy.name: accuracy, cost.name: cost}
    if "macs_M" not in metrics:
        metrics["macs_M"] = macs_objective(exp.space, name="macs_M")
    return [accuracy, cost], metrics


def front_table(result: SearchResult, limit: int = 20) -> str:
    """The front as a fixed-width table (rank, arch id, every metric; MACs added when not an objective)."""
    rows = result.records(result.front_indices())
    acc = [o["name"] for o in result.objectives][0]
    rows.sort(key=lambda r: -r[acc])
    cols = list(result.metric_names)
    macs = getattr(result.space, "macs", None)
    if "macs_M" not in cols and callable(macs):
        for r in rows:
            r["macs_M"] = macs(result.space.from_dict(r["arch"])) / 1e6
        cols.append("macs_M")
    head = f"{'rank':>4}  {'arch id':<48} " + " ".join(f"{c:>10}" for c in cols)
    lines = [head, "-" * len(head)]
    for rank, r in enumerate(rows[:limit]):
        aid = r["arch_id"] if len(r["arch_id"]) <= 48 else r["arch_id"][:45] + "..."
        lines.append(f"{rank:>4}  {aid:<48} " + " ".join(f"{r[c]:>10.3f}" for c in cols))
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more in front.csv")
    return "\n".join(lines)


def front_ranked(result: SearchResult) -> list[dict[str, Any]]:
    rows = result.records(result.front_indices())
    acc = [o["name"] for o in result.objectives][0]
    return sorted(rows, key=lambda r: -r[acc])


def _export_note(out: Path, exp: Experiment, n: int) -> str:
    lines = [f"# Exporting a front point ({exp.name})", "",
             f"The front has {n} points, ranked by predicted accuracy in `front_ranked.json` (rank 0 = most accurate).",
             ""]
    if exp.supernet_path is not None:
        lines += ["```bash", f"python -m nas.export results={out} rank=0 out={out}/subnet_rank0", "```", "",
                  "or, in the same run: `python -m nas.search ... export=0`."]
    else:
        lines += ["This preset has no trained supernet in the package; export with your own checkpoint:",
                  "```bash", f"python -m nas.export results={out} rank=0 supernet=<checkpoint dir> out=<dir>", "```"]
    return "\n".join(lines) + "\n"


def search_from_config(cfg: DictConfig) -> SearchOutcome:
    """Run one search as configured (``conf/search.yaml``); the library behind the CLI."""
    retain_freed_memory(bool(cfg.get("retain_memory", True)))
    measured = bool(cfg.get("supernet") and cfg.supernet.get("checkpoint"))
    if measured:  # accuracy measured on a trained supernet, in LINAS rounds
        from nas.search.measured import linas_from_config, measured_experiment

        override = _custom_space(str(cfg.search_space.name), _kwargs(cfg.search_space)) \
            if cfg.get("search_space") else None  # type: ignore[arg-type]
        exp = measured_experiment(cfg, override)
    else:
        exp = create_experiment(cfg.experiment.name, **_kwargs(cfg.experiment))  # type: ignore[arg-type]
        if cfg.get("search_space"):
            exp = _with_custom_space(exp, cfg)
    objectives, metrics = _metrics(cfg, exp)
    constraints = [parse_constraint(c, metrics) for c in (cfg.get("constraints") or [])]
    out = Path(cfg.out_dir)
    searcher_kwargs = _kwargs(cfg.searcher)
    if measured:
        result = linas_from_config(cfg, exp, objectives, constraints, out, searcher_kwargs)  # type: ignore[arg-type]
    else:
        result = run_search(exp.space, objectives, constraints, cfg.searcher.name, budget=int(cfg.budget),
                            seed=int(cfg.seed), out_dir=out, searcher_kwargs=searcher_kwargs,  # type: ignore[arg-type]
                            resume=bool(cfg.resume), progress=_progress(int(cfg.budget)) if cfg.progress else None)
    ranked = front_ranked(result)
    atomic_write_text(out / "front_ranked.json", json.dumps(ranked, indent=1))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.update({"resolved_supernet": str(exp.supernet_path) if exp.supernet_path else None,  # type: ignore
                     "export_data": exp.data or None})
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    atomic_write_text(out / "EXPORT.md", _export_note(out, exp, len(ranked)))
    outcome = SearchOutcome(result=result, experiment=exp, out_dir=out, table=front_table(result),
                            notes=tuple(o.note() for o in objectives if getattr(o, "note", None)))
    if cfg.get("export") is not None:
        from nas.export_subnet import export_front_point

        outcome.exported = export_front_point(out, rank=int(cfg.export), supernet=exp.supernet_path,
                                              data=exp.data or None, out=out / f"subnet_rank{int(cfg.export)}",
                                              overwrite=True)  # the search's own output: a rerun replaces it
    return outcome


def _with_custom_space(exp: Experiment, cfg: DictConfig) -> Experiment:
    kwargs = _kwargs(cfg.search_space)
    space = _custom_space(str(cfg.search_space.name), kwargs)  # type: ignore[arg-type]
    if cfg.experiment.name != "custom":
        raise ConfigError("search_space=... needs experiment=custom (accuracy from experiment.kwargs.measurements "
                          "or supernet evaluation)")
    exp.space = space
    return exp


def _progress(budget: int) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=budget, desc="search", unit="arch", file=sys.stderr, leave=False)

    def update(problem: Any, step: int) -> None:
        bar.n = min(problem.n_queries, budget)
        bar.refresh()
        if bar.n >= budget:
            bar.close()

    return update


def summarise(outcome: SearchOutcome) -> str:
    r = outcome.result
    objs = " vs ".join(f"{o['name']} ({o['direction']})" for o in r.objectives)
    return (f"{outcome.experiment.name}: {r.searcher} searched {r.n} architectures of {outcome.experiment.space.name} "
            f"in {r.seconds:.1f} s; {objs}\naccuracy: {outcome.experiment.accuracy_note}\n\n{outcome.table}\n\n"
            f"results: {outcome.out_dir} (front.csv, result.json, pareto.png, config.yaml, EXPORT.md)"
            + "".join(f"\n{note}" for note in outcome.notes)
            + (f"\n{outcome.exported}" if outcome.exported else ""))
