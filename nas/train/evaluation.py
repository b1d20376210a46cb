"""Moved to :mod:`nas.evaluation`; this name re-exports it for code written against the old location."""

from __future__ import annotations

from nas.evaluation.subnets import *  # noqa: F403
from nas.evaluation.subnets import __all__  # noqa: F401
