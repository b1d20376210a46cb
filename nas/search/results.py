"""The result of a search: every queried architecture with its metrics, the Pareto front, hypervolume, files.

A :class:`SearchResult` holds enough to export any point (the architecture dict of every row) and writes a results
directory: ``evaluated.csv`` and ``front.csv`` (one row per architecture, metric columns), ``result.json`` (settings,
front, hypervolume, every evaluation) and ``pareto.png`` (the first two objectives). Objective values are reported
raw (accuracy as accuracy); fronts and hypervolume use the minimisation form ``sign * value``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.search.pareto import default_reference_point, hypervolume, pareto_front
from search_spaces.errors import BadInputError, CorruptFileError

__all__ = ["SearchResult", "records_csv", "atomic_write_text", "atomic_write_bytes", "read_json", "read_results_dir"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())



def read_json(path: Path) -> Any:
    """JSON from ``path``; a truncated or altered file is a :class:`CorruptFileError` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path} is not valid JSON ({exc}); the file is truncated or was edited. "
                               "Rerun the command that wrote it.") from None


#: the ranked fronts a results dir can hold: the search's (predicted accuracy) and, after ``verify.top=K``, the
#: verified one (measured on the supernet; :mod:`nas.search.verify`)
FRONT_FILES = {"search": "front_ranked.json", "verified": "verified_front.json"}


def read_results_dir(results: str | Path, front: str = "search") -> tuple[list[dict[str, Any]], str]:
    """The ranked front (``front_ranked.json``, or ``verified_front.json`` with ``front="verified"``) and resolved
    config text (``config.yaml``) of a search results dir."""
    results = Path(results)
    if front not in FRONT_FILES:
        raise BadInputError(f"front={front!r}; choose one of {list(FRONT_FILES)}")
    if not results.is_dir():
        raise BadInputError(f"results={str(results)!r} is not a directory; give the out_dir of a finished "
                            "`python -m nas.search` run")
    missing = [n for n in ("front_ranked.json", "config.yaml") if not (results / n).is_file()]
    if missing:
        raise BadInputError(f"results={str(results)!r} is not a finished search results directory: "
                            f"{', '.join(missing)} missing")
    name = FRONT_FILES[front]
    if not (results / name).is_file():
        raise BadInputError(f"results={str(results)!r} has no verified front ({name}): run the search with "
                            "verify.top=K (measures K front points on the supernet), or export front=search")
    front = read_json(results / name)
    if not isinstance(front, list) or not all(isinstance(p, dict) and "arch" in p for p in front):
        raise CorruptFileError(f"{results / name} is not a list of front points with an 'arch'")
    return front, (results / "config.yaml").read_text()


def records_csv(records: Iterable[dict[str, Any]], cols: list[str]) -> str:
    """CSV text of result records in the column order ``cols``; the ``arch`` column as sorted-key JSON."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    for rec in records:
        writer.writerow({**rec, "arch": json.dumps(rec["arch"], sort_keys=True)})
    return buf.getvalue()


@dataclass
class SearchResult:
    """Queried architectures in query order (encodings ``X``), their raw metrics (columns ``metric_names``) and the
    settings. Architecture objects, ids and dicts are decoded on first use (a 50,000-query search needs none)."""

    space: Any
    objectives: list[dict[str, Any]]
    constraints: list[dict[str, Any]]
    metric_names: list[str]
    X: np.ndarray
    values: np.ndarray
    F: np.ndarray
    G: np.ndarray
    searcher: str = ""
    searcher_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    budget: int = 0
    stop_reason: str = "budget"
    seconds: float = 0.0
    #: more top-level entries of result.json (e.g. how latencies were priced), set by the application
    notes: dict[str, Any] = field(default_factory=dict)
    _archs: list[Any] | None = field(default=None, repr=False)

    # -- views ------------------------------------------------------------------------------------------------
    @property
    def space_spec(self) -> dict[str, Any]:
        return self.space.spec()

    @property
    def archs(self) -> list[Any]:
        if self._archs is None:
            self._archs = [self.space.decode(x) for x in self.X]
        return self._archs

    @property
    def arch_ids(self) -> list[str]:
        return [self.space.arch_id(a) for a in self.archs]

    @property
    def arch_dicts(self) -> list[dict[str, Any]]:
        return [self.space.to_dict(a) for a in self.archs]

    @property
    def n(self) -> int:
        return len(self.X)

    @property
    def cv(self) -> np.ndarray:
        return np.clip(self.G, 0, None).sum(axis=1) if self.G.shape[1] else np.zeros(self.n)

    @property
    def feasible(self) -> np.ndarray:
        return self.cv <= 0

    def front_indices(self) -> np.ndarray:
        """Rows on the feasible Pareto front, sorted by the first objective."""
        return pareto_front(self.F, self.cv) if self.n else np.zeros(0, dtype=np.int64)

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metric_names:
            raise KeyError(f"no metric {name!r}; metrics: {self.metric_names}")
        return self.values[:, self.metric_names.index(name)]

    def best(self, objective: int | str = 0) -> int:
        """Row of the best feasible architecture for one objective (raises if none is feasible)."""
        j = objective if isinstance(objective, int) else [o["name"] for o in self.objectives].index(objective)
        ok = np.flatnonzero(self.feasible)
        if not len(ok):
            raise ValueError("no feasible architecture was evaluated")
        return int(ok[np.argmin(self.F[ok, j])])

    def trace(self, objective: int = 0) -> np.ndarray:
        """Best raw value of ``objective`` among the first k queries, k = 1..n (feasible points only; NaN before)."""
        sign = -1.0 if self.objectives[objective]["direction"] == "max" else 1.0
        f = np.where(self.feasible, self.F[:, objective], np.inf)
        best = np.minimum.accumulate(f) if self.n else f
        return np.where(np.isfinite(best), sign * best, np.nan)

    def hypervolume(self, ref_point: np.ndarray | None = None) -> float:
        """Hypervolume of the front in minimisation form; default reference: the front's nadir + 10% of its range."""
        idx = self.front_indices()
        if not len(idx):
            return 0.0
        ref = default_reference_point(self.F[idx]) if ref_point is None else np.asarray(ref_point, float)
        return hypervolume(self.F[idx], ref)

    def closest_infeasible(self) -> int:
        """Row with the smallest total constraint violation."""
        return int(np.argmin(self.cv))

    def records(self, rows: np.ndarray | None = None) -> list[dict[str, Any]]:
        rows = np.arange(self.n) if rows is None else rows
        front = set(self.front_indices().tolist())
        archs, feasible = self.archs, self.feasible
        return [{"query": int(i) + 1, "arch_id": self.space.arch_id(archs[i]),
                 **{n: float(v) for n, v in zip(self.metric_names, self.values[i])},
                 "feasible": bool(feasible[i]), "on_front": int(i) in front, "arch": self.space.to_dict(archs[i])}
                for i in rows]

    # -- files ------------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        front = self.front_indices()
        return {"space": self.space_spec, "objectives": self.objectives, "constraints": self.constraints,
                "searcher": self.searcher, "searcher_config": self.searcher_config, "seed": self.seed,
                "budget": self.budget, "n_queries": self.n, "stop_reason": self.stop_reason,
                "seconds": self.seconds, "hypervolume": self.hypervolume(),
                **self.notes, "front": self.records(front), "evaluated": self.records()}

    def _csv(self, rows: np.ndarray) -> str:
        return records_csv(self.records(rows), ["query", "arch_id", *self.metric_names, "feasible", "on_front", "arch"])

    def save(self, out_dir: str | Path, *, plot: bool = True) -> Path:
        """Write ``evaluated.csv``, ``front.csv``, ``result.json`` and (if ``plot``) ``pareto.png``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "evaluated.csv", self._csv(np.arange(self.n)))
        atomic_write_text(out / "front.csv", self._csv(self.front_indices()))
        atomic_write_text(out / "result.json", json.dumps(self.to_json(), indent=1, sort_keys=False))
        if plot and self.n:
            self.plot(out / "pareto.png")
        return out

    def plot(self, path: str | Path) -> None:
        """Scatter of all queries and the front over the first two objectives (or objective vs query)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        names = [o["name"] for o in self.objectives]
        front = self.front_indices()
        raw = self.F * np.array([-1.0 if o["direction"] == "max" else 1.0 for o in self.objectives])
        if len(names) >= 2:
            x, y, xl, yl = raw[:, 0], raw[:, 1], names[0], names[1]
        else:
            x, y, xl, yl = np.arange(1, self.n + 1), raw[:, 0], "query", names[0]
        ax.scatter(x[~self.feasible], y[~self.feasible], s=8, c="0.8", marker="x", label="infeasible")
        ax.scatter(x[self.feasible], y[self.feasible], s=8, c="0.55", label="evaluated")
        if len(front):
            o = np.argsort(x[front])
            ax.plot(x[front][o], y[front][o], "o-", c="tab:red", ms=4,
                    label="Pareto front" if len(names) >= 2 else "best")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{self.space_spec.get('name', '')}: {self.searcher}, {self.n} queries")
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        atomic_write_bytes(Path(path), buf.getvalue())
