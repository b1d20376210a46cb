"""Checks of config values a user sets on the command line: each failure is a :class:`BadInputError` that names
the key, the value given and what is allowed (``budget=abc`` -> "budget must be an integer >= 1, got 'abc'")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from search_spaces.errors import BadInputError

__all__ = ["as_int", "as_float", "as_bool", "as_str_list", "as_mapping", "one_of"]


def as_int(value: Any, key: str, *, minimum: int | None = None) -> int:
    """``value`` as an int (``"3"`` and ``3.0`` accepted; ``True``, ``"abc"`` and ``2.5`` refused)."""
    allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        out = int(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{key} must be {allowed}, got {value!r}") from None
    if minimum is not None and out < minimum:
        raise BadInputError(f"{key} must be {allowed}, got {value!r}")
    return out


def as_float(value: Any, key: str, *, minimum: float | None = None) -> float:
    allowed = "a number" + (f" >= {minimum}" if minimum is not None else "")
    try:
        if isinstance(value, bool):
            raise ValueError
        out = float(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{key} must be {allowed}, got {value!r}") from None
    if minimum is not None and not out >= minimum:
        raise BadInputError(f"{key} must be {allowed}, got {value!r}")
    return out


def as_bool(value: Any, key: str) -> bool:
    """``true``/``false`` only: ``bool("no")`` would be True, so strings and numbers are refused."""
    if not isinstance(value, bool):
        raise BadInputError(f"{key} must be true or false, got {value!r}")
    return value


def as_str_list(value: Any, key: str, *, example: str) -> list[str]:
    """A list of strings; a bare string is refused with the list form to write instead."""
    if value is None:
        return []
    if isinstance(value, str):
        raise BadInputError(f"{key} must be a list, got the string {value!r}; write {key}=\"[{value!r}]\" "
                            f"(e.g. {key}=\"[{example!r}]\")")
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise BadInputError(f"{key} must be a list of strings such as [{example!r}], got {value!r}")
    return list(value)


def as_mapping(value: Any, key: str, *, example: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise BadInputError(f"{key} must be a mapping such as {example}, got {value!r}")
    return dict(value)


def one_of(value: Any, key: str, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise BadInputError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")
    return value
