"""Engine-wide access to the generic registry.

The class lives in :mod:`search_spaces.registry` because ``search_spaces`` is the bottom layer and must not
import anything of ours; every other package uses it from here.
"""

from __future__ import annotations

from search_spaces.registry import DuplicateNameError, Registry, UnknownNameError

__all__ = ["Registry", "UnknownNameError", "DuplicateNameError"]
