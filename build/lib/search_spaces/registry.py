"""A small generic registry of factories (timm's ``register_model`` / ``create_model`` pattern).

Every extension point of the engine (search spaces, supernets, predictors, samplers, searchers, hardware
profiles, data modules) keeps one :class:`Registry`. Registries hold factories, never instances; duplicate
names are errors and unknown names list the close matches.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "UnknownNameError", "DuplicateNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown name was requested; the message lists what is registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """A name was registered twice."""


class Registry(Generic[T]):
    """Maps names to factories returning ``T``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a factory under ``name`` (default: the factory's ``__name__``)."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name or factory.__name__, factory)
            return factory

        return deco

    def add(self, name: str, factory: Callable[..., T]) -> None:
        if name in self._factories:
            raise DuplicateNameError(f"{self.kind} {name!r} is already registered")
        self._factories[name] = factory

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._factories, n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} Available: {', '.join(sorted(self._factories))}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)
