"""An architecture as a user types it on the command line: JSON, a dict, or the canonical id a search printed.

The id form is parsed by the space (the ``from_id(text)`` capability: every built-in space has it, so an id needs no
results file); for a user's space without it, the id is looked up among architectures the engine has already seen
and written down: the rows of a search's ``evaluated.csv`` and of a supernet directory's ``measurements.csv``.
Every failure names the value and the forms that are allowed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from search_spaces.base import has_capability
from search_spaces.errors import BadInputError, MissingCapabilityError
from search_spaces.quant import InvalidPolicyError

__all__ = ["ArchInputError", "parse_arch", "FORMS"]

FORMS = ("JSON such as '{\"ks\": [...], \"e\": [...], \"d\": [...], \"r\": 32}'",
         "the canonical arch id a search prints (e.g. r32-k7e3-k5e3.k3e3-...)", "results=<search dir> rank=N")


class ArchInputError(BadInputError):
    """An architecture given on the command line cannot be read in the supernet's space."""


def _allowed() -> str:
    return "allowed: " + "; ".join(FORMS)


def _from_dict(space: Any, d: Mapping[str, Any], shown: str) -> Any:
    try:
        return space.from_dict(dict(d))
    except InvalidPolicyError as exc:  # the JSON would bury the point: name the architecture and the slot
        arch = d.get("arch") if isinstance(d.get("arch"), Mapping) else {}
        raise ArchInputError(f"the quantisation policy in arch= is not one for its architecture "
                             f"{json.dumps(dict(arch), default=str)} (space {space.name!r}): {exc}. A policy holds "
                             "one setting per layer its own architecture runs (None for the others); export the "
                             "(arch, policy) pair the search found") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ArchInputError(f"arch={shown} is not an architecture of space {space.name!r}: {exc}") from None


def _known_rows(sources: Iterable[Path]) -> Iterable[tuple[str, str]]:
    """(arch id, arch JSON) pairs of the CSV files that exist among ``sources``."""
    for path in sources:
        if not path.is_file():
            continue
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("arch_id") and row.get("arch"):
                    yield row["arch_id"], row["arch"]


def parse_arch(space: Any, value: Any, *, lookup: Iterable[str | Path] = ()) -> Any:
    """The architecture of ``space`` that ``value`` (dict, JSON text or arch id) names.

    ``lookup`` lists search results directories, supernet directories or CSV files whose rows may hold the id."""
    if isinstance(value, Mapping):
        return _from_dict(space, value, json.dumps(dict(value), default=str))
    text = str(value).strip()
    if not text:
        raise ArchInputError(f"arch is empty; {_allowed()}")
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchInputError(f"arch={text!r} does not parse as JSON ({exc.msg} at column {exc.colno}); "
                                 f"{_allowed()}") from None
        if not isinstance(d, dict):
            raise ArchInputError(f"arch={text!r} is JSON but not an object; {_allowed()}")
        return _from_dict(space, d, repr(text))
    if has_capability(space, "from_id"):
        try:
            return space.from_id(text)
        except MissingCapabilityError:
            pass  # e.g. a joint space over a user's base space that cannot parse ids: look the id up below
        except (ValueError, KeyError) as exc:
            raise ArchInputError(f"arch does not parse: {exc}. Other forms: {FORMS[0]}; {FORMS[2]}") from None
    files: list[Path] = []
    for src in map(Path, lookup):
        files += [src / "evaluated.csv", src / "measurements.csv"] if src.is_dir() else [src]
    for arch_id, arch_json in _known_rows(files):
        if arch_id == text:
            return _from_dict(space, json.loads(arch_json), repr(text))
    searched = ", ".join(str(f) for f in files if f.is_file()) or "no results or measurements files"
    raise ArchInputError(f"arch={text!r} does not parse: it is not JSON, space {space.name!r} cannot parse arch ids, "
                         f"and no architecture with that id was found in {searched}; {_allowed()}")
