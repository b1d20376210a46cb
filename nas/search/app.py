"""The ``python -m nas.search`` application: config -> accuracy source, objectives, searcher -> front + results dir.

The search is composed from config groups (:mod:`nas.search.compose`): ``accuracy`` (the preset's predictor, a
predictor fitted on a CSV, or real supernet evaluation), ``objectives`` (accuracy against latency with
``+hw=<name>`` or MACs, or any registered objective), constraints such as ``latency_ms<=25``, ``predictor`` and
``searcher``. The results directory holds the front as CSV/JSON, a Pareto plot, the resolved config and
``EXPORT.md`` with the commands exporting any front point.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from nas.checks import as_bool, as_int, as_str_list
from nas.experiments import Experiment
from nas.search.compose import ComposeError, accuracy_source, build_objectives, parse_constraint, run_driver
from nas.search.results import SearchResult, atomic_write_text
from nas.search.run_dirs import point_latest, results_dir
from nas.search.verify import FRONT_FILE, verified_table, verify_front, verify_settings

__all__ = ["SearchOutcome", "search_from_config", "parse_constraint", "front_table", "ConfigError"]

log = logging.getLogger(__name__)
ConfigError = ComposeError  # the name this module exported before the search was composed from config groups


@dataclass
class SearchOutcome:
    result: SearchResult
    experiment: Experiment
    out_dir: Path
    table: str
    exported: str | None = None
    notes: tuple[str, ...] = ()
    verified: Any = None  # nas.search.verify.VerifyOutcome when verify.top was set


def extrapolation_report(model: Any, space: Any, result: SearchResult) -> dict[str, Any]:
    """How the evaluated architectures were priced: layers from the measured table vs extrapolated by a model."""
    n_modelled = model.evaluate_encoded(space, result.X).n_modelled if result.n else []
    table = getattr(model, "table", None)
    report: dict[str, Any] = {"profile": getattr(getattr(model, "meta", None), "name", str(model)),
                              "built_for_space": getattr(getattr(model, "meta", None), "space", None),
                              "evaluated_archs": result.n,
                              "archs_with_extrapolated_layers": int((np.asarray(n_modelled) > 0).sum()),
                              "extrapolated_layers": int(np.sum(n_modelled))}
    if table is not None:
        found, total = model.coverage(space) if table else (0, 0)
        report.update(measured_table_layers=len(table), space_layer_signatures_measured=f"{found}/{total}")
    return report


def _describe_extrapolation(report: dict[str, Any] | None) -> str:
    if not report:
        return ""
    if not report.get("measured_table_layers"):
        return (f"\nlatency: {report['profile']} is a calibrated model (no measured table): every layer of the "
                f"{report['evaluated_archs']} architectures was priced by the model")
    return (f"\nlatency: profile {report['profile']} measured {report['space_layer_signatures_measured']} layer "
            f"signatures of this space; {report['archs_with_extrapolated_layers']} of {report['evaluated_archs']} "
            f"architectures have extrapolated layers ({report['extrapolated_layers']} layers in all)")


def front_table(result: SearchResult, limit: int = 20, labels: Callable[[dict[str, Any]], str] | None = None) -> str:
    """The front as a fixed-width table (rank, arch id, every metric; MACs added when not an objective); ``labels``
    adds a last column (what the latency profile priced each point as running in, e.g. int8 kernels)."""
    rows = result.records(result.front_indices())
    acc = [o["name"] for o in result.objectives][0]
    rows.sort(key=lambda r: -r[acc])
    cols = list(result.metric_names)
    macs = getattr(result.space, "macs", None)
    if "macs_M" not in cols and callable(macs):
        for r in rows:
            r["macs_M"] = macs(result.space.from_dict(r["arch"])) / 1e6
        cols.append("macs_M")
    width = max([48, *(len(r["arch_id"]) for r in rows[:limit])])  # whole ids: nas.export arch=<id> takes them
    head = f"{'rank':>4}  {'arch id':<{width}} " + " ".join(f"{c:>10}" for c in cols)
    head += "  runs as" if labels is not None else ""
    lines = [head, "-" * len(head)]
    for rank, r in enumerate(rows[:limit]):
        lines.append(f"{rank:>4}  {r['arch_id']:<{width}} " + " ".join(f"{r[c]:>10.3f}" for c in cols)
                     + (f"  {labels(r)}" if labels is not None else ""))
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more in front.csv")
    return "\n".join(lines)


def front_ranked(result: SearchResult) -> list[dict[str, Any]]:
    rows = result.records(result.front_indices())
    acc = [o["name"] for o in result.objectives][0]
    return sorted(rows, key=lambda r: -r[acc])


def _export_note(out: Path, exp: Experiment, ranked: list[dict[str, Any]], verified: Any = None) -> str:
    """``EXPORT.md``: commands that export a front point, runnable as printed (or once the named variables are set)."""
    lines = [f"# Exporting a front point ({exp.name})", "",
             f"The front has {len(ranked)} points, ranked by accuracy in `front_ranked.json` (rank 0 = most "
             "accurate).", ""]
    space, out = getattr(exp.space, "name", "?"), out.resolve()
    if exp.supernet_path is not None:
        data = exp.data or {}
        lines += ["```bash", f"python -m nas.export results={out} rank=0 out={out}/subnet_rank0", "```", "",
                  "The supernet and the data to recalibrate BN on come from this search's `config.yaml`. "
                  "The same point by its arch id, from anywhere:", "",
                  "```bash", f"python -m nas.export checkpoint={Path(exp.supernet_path).resolve()} "
                  f"arch={ranked[0]['arch_id']} "
                  f"results={out} {_data_overrides(data)}out=subnet_rank0", "```", "",
                  "or, in the same run: `python -m nas.search ... export=0`."] if ranked else ["(empty front)"]
        if verified is not None and verified.front:
            best = verified.front[0]
            lines += ["", f"The front was verified on the supernet (`verified.csv`, `{FRONT_FILE}`): {verified.note}. "
                      f"The most accurate measured point ({best['arch_id']}), as `export=0` in the same run "
                      "exports it:", "",
                      "```bash", f"python -m nas.export results={out} front=verified rank=0 "
                      f"out={out}/subnet_verified0", "```"]
    else:
        lines += [f"This preset has no trained supernet in the package: set `CHECKPOINT` to a supernet of space "
                  f"`{space}` (weights directory or training `checkpoint.pt`) and `DATA` to the data it was trained "
                  "on (BN statistics are recalibrated on it), or `DATA=recalibrate=false` to keep the supernet's "
                  "shared statistics.", "",
                  "```bash", "CHECKPOINT=/path/to/supernet",
                  "DATA=\"data=image_folder data.kwargs.root=/path/to/train/images\"",
                  f"python -m nas.export results={out} rank=0 checkpoint=\"$CHECKPOINT\" $DATA "
                  f"out={out}/subnet_rank0", "```"]
    return "\n".join(lines) + "\n"


def _data_overrides(data: dict[str, Any]) -> str:
    if not data:
        return "recalibrate=false "
    kw = " ".join(f"data.kwargs.{k}={v}" for k, v in (data.get("kwargs") or {}).items() if v is not None)
    return f"data={data['name']} " + (kw + " " if kw else "")


def search_from_config(cfg: DictConfig) -> SearchOutcome:
    """Run one search as configured (``nas/conf/search.yaml``, composed by :mod:`nas.search.compose`)."""
    budget = as_int(cfg.budget, "budget", minimum=1)
    as_int(cfg.seed, "seed", minimum=0)
    export = None if cfg.get("export") is None else as_int(cfg.export, "export", minimum=0)
    constraint_texts = as_str_list(cfg.get("constraints"), "constraints", example="latency_ms<=25")
    progress = as_bool(cfg.progress, "progress")
    exp = accuracy_source(cfg)
    objectives, metrics = build_objectives(cfg, exp)
    constraints = [parse_constraint(c, metrics, exp.space) for c in constraint_texts]
    verify = verify_settings(cfg, exp)  # checked before the search runs
    out, keyed = results_dir(cfg)
    result = run_driver(cfg, exp, objectives, constraints, out, progress=_progress(budget) if progress else None)
    cost_model = next((o.model for o in objectives if o.model is not None), None)
    if cost_model is not None and hasattr(cost_model, "evaluate_encoded"):
        result.notes["latency_pricing"] = extrapolation_report(cost_model, exp.space, result)
        atomic_write_text(out / "result.json", json.dumps(result.to_json(), indent=1))
    ranked = front_ranked(result)
    runs_as = getattr(cost_model, "runs_as_of", None)  # int8 profiles: what each point's layers run as
    labels = (lambda r: runs_as(exp.space, exp.space.from_dict(r["arch"]))) if callable(runs_as) else None
    if labels is not None:
        for row in ranked:
            row["runs_as"] = labels(row)
    atomic_write_text(out / "front_ranked.json", json.dumps(ranked, indent=1))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.update({"resolved_supernet": str(exp.supernet_path) if exp.supernet_path else None,  # type: ignore
                     "export_data": exp.data or None})
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    verified = verify_front(result, exp, verify, out, seed=int(cfg.seed)) if verify is not None else None
    atomic_write_text(out / "EXPORT.md", _export_note(out, exp, ranked, verified))
    if keyed:
        point_latest(out)
    outcome = SearchOutcome(result=result, experiment=exp, out_dir=out, table=front_table(result, labels=labels),
                            notes=tuple(o.note() for o in objectives if getattr(o, "note", None)),
                            verified=verified)
    if export is not None:
        from nas.export_subnet import export_front_point, front_subnet_dir

        front = "verified" if verified is not None and verified.front else "search"  # measured beats predicted
        outcome.exported = export_front_point(out, rank=export, checkpoint=exp.supernet_path,
                                              data=exp.data or None, front=front, overwrite=True,  # a rerun replaces it
                                              out=out / front_subnet_dir(front, export))
    return outcome


def _progress(budget: int) -> Any:
    from tqdm import tqdm

    bars: list[Any] = []  # opened at the first step: nothing is drawn when the search fails to start

    def update(problem: Any, step: int) -> None:
        if not bars:
            bars.append(tqdm(total=budget, desc="search", unit="arch", file=sys.stderr, leave=False))
        bar = bars[0]
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
            + _describe_extrapolation(r.notes.get("latency_pricing")) + "\n"
            f"results: {outcome.out_dir} (front.csv, result.json, pareto.png, config.yaml, EXPORT.md)"
            + "".join(f"\n{note}" for note in outcome.notes) + _describe_verified(outcome)
            + (f"\n{outcome.exported}" if outcome.exported else ""))


def _describe_verified(outcome: SearchOutcome) -> str:
    v = outcome.verified
    if v is None:
        return ""
    name = outcome.result.objectives[0]["name"]
    return (f"\n\nverified front ({outcome.out_dir / FRONT_FILE}): {v.note}\n{verified_table(v, name)}\n"
            f"export the most accurate measured point: see {outcome.out_dir / 'EXPORT.md'}")
