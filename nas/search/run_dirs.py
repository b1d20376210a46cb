"""Where a search writes: its own results directory per config, and a stable ``latest`` pointer.

Without an explicit ``out_dir`` a search writes ``<results_root>/<experiment>-<cost>-<searcher>-<hash>``, the hash
taken over the resolved config minus the keys that do not change what is computed (progress bars, export, runtime
tuning, where to write). Two different searches therefore never meet in one directory, and running the same config
again finds its own checkpoint and resumes (a finished search returns its result at once). After each search
``<results_root>/latest`` points at its directory (a relative symlink, replaced atomically), so
``nas.export results=results/search/latest`` exports from the last search whatever its config was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["LATEST", "results_dir", "config_key", "point_latest"]

LATEST = "latest"
#: config keys that do not change the search's result
IGNORED = ("out_dir", "results_root", "progress", "resume", "export", "runtime", "retain_memory", "hydra",
           "verify")  # verification measures the front afterwards; the search itself is the same


def config_key(cfg: DictConfig) -> str:
    """``<experiment, or the accuracy source>-<hw or macs>-<searcher>-<10 hex of the config hash>``."""
    plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    kept = {k: v for k, v in plain.items() if k not in IGNORED}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:10]
    source = OmegaConf.select(cfg, "accuracy.source", default="experiment")
    first = OmegaConf.select(cfg, "experiment.name", default=None) if source == "experiment" else source
    parts = [first, OmegaConf.select(cfg, "hw.name", default="macs"),
             OmegaConf.select(cfg, "searcher.name", default=None)]
    return "-".join(str(p) for p in parts if p) + f"-{digest}"


def results_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """(directory, whether it is a keyed default that ``latest`` should point at)."""
    if cfg.get("out_dir"):
        return Path(str(cfg.out_dir)), False
    return Path(str(cfg.get("results_root") or "results/search")) / config_key(cfg), True


def point_latest(out: Path) -> Path:
    """Make ``out.parent/latest`` a relative symlink to ``out`` (atomically replacing the previous one)."""
    link = out.parent / LATEST
    tmp = out.parent / f".{LATEST}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(out.name, tmp, target_is_directory=True)
    os.replace(tmp, link)
    return link
