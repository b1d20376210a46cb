"""The edge of every command: turn engine errors into one clean message and a stable exit code.

Each ``__main__`` calls :func:`run_command` around its library function. A :class:`~search_spaces.errors.NasError`
prints ``error: <message>`` on stderr and exits with its ``exit_code`` (2 bad input, 3 corrupt file); any other
exception propagates with its traceback (that is a bug, not bad input). ``NAS_DEBUG=1`` or hydra's
``hydra.verbose=true`` shows the traceback of engine errors too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from search_spaces.errors import NasError

__all__ = ["run_command", "debug_enabled"]

T = TypeVar("T")


def debug_enabled() -> bool:
    """``NAS_DEBUG=1`` in the environment, or hydra's ``hydra.verbose`` set on the command line."""
    if os.environ.get("NAS_DEBUG", "") not in ("", "0"):
        return True
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return False
    return HydraConfig.initialized() and bool(HydraConfig.get().verbose)


def run_command(fn: Callable[[], T], *, debug: bool = False) -> T:
    """Run ``fn``; on a NasError print one line to stderr and ``sys.exit`` with the error's exit code."""
    try:
        return fn()
    except NasError as err:
        if debug or debug_enabled():
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
