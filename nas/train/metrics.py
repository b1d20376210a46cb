"""Training metrics: CSV files (always) and TensorBoard scalars (when the ``tensorboard`` package is installed).

Rows carry the global ``step``; on resume, rows written after the checkpoint's step (by the interrupted run) are
dropped so the resumed run's rows replace them and the file reads like an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.checkpoints import atomic_write

__all__ = ["CSVLog", "TensorBoardLog"]


class CSVLog:
    """Append rows with fixed ``fields`` to ``path``; ``keep_until_step`` truncates rows of an interrupted run."""

    def __init__(self, path: str | Path, fields: Sequence[str], *, keep_until_step: int | None = None) -> None:
        self.path, self.fields = Path(path), list(fields)
        if keep_until_step is None or not self.path.exists():
            self._rewrite([])
            return
        with open(self.path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != self.fields:
                raise ValueError(f"{self.path} has columns {reader.fieldnames}, expected {self.fields}")
            kept = [row for row in reader if int(row["step"]) <= keep_until_step]
        self._rewrite(kept)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.fields)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda tmp: tmp.write_text(buf.getvalue()))

    def write(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(self.fields)
        if unknown:
            raise KeyError(f"unknown metric columns {sorted(unknown)}; columns are {self.fields}")
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, self.fields).writerow({k: _fmt(v) for k, v in row.items()})


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


class TensorBoardLog:
    """Scalars to TensorBoard if ``torch.utils.tensorboard`` can be imported, otherwise a no-op."""

    def __init__(self, directory: str | Path, enabled: bool = True) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(str(directory))

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(f"{prefix}{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
