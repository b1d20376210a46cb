"""The engine's hydra configs, shipped inside the package: every command reads them through ``pkg://nas.conf``.

One config group per registry (``search_space``, ``supernet``, ``data``, ``trainer``, ``sampler``, ``hw``,
``searcher``, ``experiment``, ...) and one primary config per command (``search.yaml``, ``train.yaml``, ...).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONF_DIR", "SEARCH_PATH"]

CONF_DIR = Path(__file__).resolve().parent
SEARCH_PATH = "pkg://nas.conf"
