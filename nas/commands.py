"""What every command's ``__main__`` does at its edge, besides :func:`nas.cli.run_command`.

* :func:`quote_values` lets values that Hydra's override grammar cannot read (JSON, arch ids with ``|``, ``~``,
  ``+``) pass through unchanged, by quoting them for Hydra before it parses the command line: ``arch='{"ks": ...}'``
  works as typed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

__all__ = ["quote_values"]


def quote_values(keys: Iterable[str], argv: list[str] | None = None) -> list[str]:
    """Rewrite ``key=value`` arguments for ``keys`` to Hydra's quoted form ``key='value'`` (in ``sys.argv`` by
    default); values already quoted, and other arguments, are left alone. Returns the new argument list."""
    args = sys.argv if argv is None else argv
    wanted = set(keys)
    for i, arg in enumerate(args):
        key, sep, value = arg.partition("=")
        if i == 0 or not sep or key not in wanted or value[:1] in ("'", '"') or not value:
            continue
        args[i] = f"{key}='" + value.replace("'", "\\'") + "'"
    return args
