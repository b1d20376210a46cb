"""Fit the shipped ``snapdragon855`` calibrated latency model on OFA's Samsung Galaxy Note10 lookup tables.

Once-for-All (Cai et al., ICLR 2020) published per-block latency tables of its MobileNetV3 w1.2 space measured on a
Note10 (Snapdragon 855 in its US/China/Japan variants; the variant is undocumented) at resolutions 160..224. The
tables carry no licence, so this engine ships only what it computes from them: the coefficients of a
:class:`~hw_profiles.fallback.LinearCostModel` over physical layer features, with provenance and the measured
leave-one-resolution-out error. The command that refits and writes it is ``tools/fit_snapdragon855.py``::

    python tools/fit_snapdragon855.py --tables <dir with {160..224}_lookup_table.yaml> [--out PATH]
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hw_profiles.fallback import LinearCostModel, fit_linear_cost, relative_errors
from hw_profiles.keys import parse_key
from hw_profiles.profile import Entry
from search_spaces.layers import LayerSpec

__all__ = ["read_resolution_tables", "fit_snapdragon855", "leave_one_resolution_out", "sha1_git"]


def read_resolution_tables(directory: str | Path) -> dict[int, dict[str, Entry]]:
    """``{r: {key: Entry}}`` from OFA's ``{r}_lookup_table.yaml`` files in ``directory``."""
    out: dict[int, dict[str, Entry]] = {}
    for path in sorted(Path(directory).glob("*_lookup_table.yaml")):
        m = re.fullmatch(r"(\d+)_lookup_table\.yaml", path.name)
        if m:
            data = yaml.safe_load(path.read_text())
            out[int(m.group(1))] = {k: Entry.from_dict(v, f"{path}: {k!r}") for k, v in data.items()}
    if not out:
        raise FileNotFoundError(f"no '<resolution>_lookup_table.yaml' files in {directory}")
    return out


def _rows(tables: dict[int, dict[str, Entry]], resolutions: Sequence[int]) -> tuple[list[LayerSpec], np.ndarray, list]:
    specs, y, groups = [], [], []
    for r in resolutions:
        for key, entry in tables[r].items():
            specs.append(parse_key(key))
            y.append(entry.mean)
            groups.append(r)
    return specs, np.array(y), groups


def leave_one_resolution_out(tables: dict[int, dict[str, Entry]]) -> dict[int, dict[str, Any]]:
    """For each resolution: fit on the others, predict its entries; per-block and all-layer error figures."""
    out = {}
    for r in sorted(tables):
        train = [x for x in sorted(tables) if x != r]
        specs, y, _ = _rows(tables, train)
        model = fit_linear_cost(specs, y, folds=1)
        test_specs, test_y, _ = _rows(tables, [r])
        rel = relative_errors(model.predict(test_specs), test_y)
        blocks = np.array([s.op == "mbconv" for s in test_specs])
        out[r] = {"model": model, "rel": rel, "blocks": blocks,
                  "block_within10": float(np.mean(np.abs(rel[blocks]) <= 0.10)),
                  "block_rmspe": float(np.sqrt(np.mean(rel[blocks] ** 2))),
                  "all_within10": float(np.mean(np.abs(rel) <= 0.10)),
                  "all_rmspe": float(np.sqrt(np.mean(rel**2)))}
    return out


def fit_snapdragon855(tables: dict[int, dict[str, Entry]]) -> tuple[LinearCostModel, dict[str, Any]]:
    """The final model (fitted on every resolution) and its held-out validation figures."""
    loro = leave_one_resolution_out(tables)
    specs, y, groups = _rows(tables, sorted(tables))
    model = fit_linear_cost(specs, y, groups=groups)
    validation = {
        "protocol": "leave-one-resolution-out: fit on 4 resolutions, predict every entry of the 5th",
        "per_resolution": {str(r): {k: round(v, 4) for k, v in res.items() if isinstance(v, float)}
                           for r, res in loro.items()},
        "block_within10_min": min(res["block_within10"] for res in loro.values()),
        "block_rmspe_max": max(res["block_rmspe"] for res in loro.values()),
        "rel_error_used": model.rel_error,
    }
    return model, validation


def sha1_git(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
