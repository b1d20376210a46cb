"""A network builder for the validation worker that records how many built networks are alive at once.

``build_network`` wraps :func:`supernets.static.build_network`; each module it returns is counted until it is freed,
and the peak count is written to the file named by ``NAS_TEST_ALIVE_FILE`` at every build.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

from supernets.static import build_network as _build

_alive = 0


def _freed() -> None:
    global _alive
    _alive -= 1


def build_network(layers: Any) -> Any:
    global _alive
    module = _build(layers)
    _alive += 1
    weakref.finalize(module, _freed)
    out = Path(os.environ["NAS_TEST_ALIVE_FILE"])
    peak = int(out.read_text()) if out.is_file() else 0
    out.write_text(str(max(peak, _alive)))
    return module
