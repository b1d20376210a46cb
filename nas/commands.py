"""What every command's ``__main__`` does at its edge, besides :func:`nas.cli.run_command`.

* :func:`quote_values` lets values that Hydra's override grammar cannot read (JSON, arch ids with ``|``, ``~``,
  ``+``) pass through unchanged, by quoting them for Hydra before it parses the command line: ``arch='{"ks": ...}'``
  works as typed.
* :func:`apply_runtime` applies the ``runtime`` config group (allocator, fused BN statistics, threads): process-wide
  settings belong to the command, never to a library function.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["quote_values", "apply_runtime"]


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


def apply_runtime(runtime: Mapping[str, Any] | None, *, threads: int | None = None) -> dict[str, Any]:
    """Apply a ``runtime`` entry (``retain_memory``, ``fused_bn_stats``, ``threads``) to this process.

    ``threads`` is the command's own thread setting (e.g. ``trainer.threads``), used when the entry has none.
    Returns what is now in effect."""
    import torch

    from nas.checks import as_bool, as_int
    from nas.runtime import retain_freed_memory
    from supernets import bn_stats

    rt = dict(runtime or {})
    n = rt.get("threads") or threads
    if n:
        torch.set_num_threads(as_int(n, "runtime.threads", minimum=1))
    fused = as_bool(rt.get("fused_bn_stats", True), "runtime.fused_bn_stats")
    retain = as_bool(rt.get("retain_memory", True), "runtime.retain_memory")
    bn_stats.use_fused_kernel(fused)
    return {"retain_memory": retain_freed_memory(retain), "fused_bn_stats": fused, "threads": torch.get_num_threads()}
