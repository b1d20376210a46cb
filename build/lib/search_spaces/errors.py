"""The engine's one error hierarchy (imports nothing): every error a user's input or file can cause is a NasError.

It lives in the lowest layer so that every package (``search_spaces`` <- ``supernets``, ``predictors``,
``hw_profiles`` <- ``nas``) raises the same family. Each command's entry point (:func:`nas.cli.run_command`) turns a
``NasError`` into one clean message on stderr and its ``exit_code``: 2 for bad input (a config value, an
architecture, data that does not fit), 3 for a corrupt or mismatched file. Subclasses keep inheriting the builtin
they replaced (``ValueError``, ``KeyError``) so existing ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = ["NasError", "BadInputError", "CorruptFileError", "MissingCapabilityError", "EXIT_BAD_INPUT",
           "EXIT_CORRUPT_FILE"]

EXIT_BAD_INPUT = 2
EXIT_CORRUPT_FILE = 3


class NasError(Exception):
    """Base of every engine error meant for a user; the message names the key, the value and what is allowed."""

    exit_code: int = EXIT_BAD_INPUT

    def __str__(self) -> str:  # KeyError subclasses would otherwise print their message in quotes
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class BadInputError(NasError, ValueError):
    """A config value, architecture or data set that the engine cannot use (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class CorruptFileError(NasError, ValueError):
    """A file that is truncated, altered, or was written for something else (exit code 3)."""

    exit_code = EXIT_CORRUPT_FILE


class MissingCapabilityError(BadInputError, TypeError):
    """A consumer asked a space (or supernet) for a capability it does not implement; names both."""

    def __init__(self, owner: object, capability: str, needed_by: str = "") -> None:
        name = getattr(owner, "name", None) or type(owner).__name__
        by = f" (needed by {needed_by})" if needed_by else ""
        super().__init__(f"{type(owner).__name__} {name!r} does not implement the {capability!r} capability{by}")
        self.owner, self.capability = owner, capability
