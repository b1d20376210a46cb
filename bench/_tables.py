"""Resumable CSV tables of the benches: ``#`` comment header, one fsync'ed row per finished run, torn tail dropped."""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["read_rows", "start_table", "append_row"]


def read_rows(path: Path) -> list[dict[str, str]]:
    """Data rows of a table (``#`` lines are comments); none when the file does not exist yet."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def start_table(path: Path, header: list[str], columns: list[str]) -> None:
    """Create the table with its comment header, or drop a torn last line left by an interrupted run."""
    if path.exists():
        text = path.read_text()
        if text and not text.endswith("\n"):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text[: text.rfind("\n") + 1])
            os.replace(tmp, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"# {h}\n" for h in header) + ",".join(columns) + "\n")
    os.replace(tmp, path)


def append_row(path: Path, row: dict[str, object], columns: list[str]) -> None:
    """Append one row and make it durable before the next run starts."""
    with open(path, "a", newline="") as fh:
        csv.DictWriter(fh, columns).writerow(row)
        fh.flush()
        os.fsync(fh.fileno())
