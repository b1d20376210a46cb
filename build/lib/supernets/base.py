"""The supernet contract: one set of shared weights, an active architecture set in one validated place.

``set_arch`` validates against the supernet's space and configures every elastic op; ``use(arch)`` does the
same as a context manager that restores the previous architecture, even on error. ``export(arch)`` returns a
static module and the JSON config that rebuilds it with :func:`supernets.static.build_from_config`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_spaces import SearchSpace, create_space
from search_spaces.registry import Registry
from supernets.ops import DerivedWeight

__all__ = ["Supernet", "Exported", "SUPERNETS", "create_supernet", "supernet_from_spec"]


@dataclass
class Exported:
    """A static subnet: the module, the config that rebuilds it, and what it was cut from."""

    module: nn.Module
    config: dict[str, Any]
    arch: Any
    space: SearchSpace


class Supernet(nn.Module, abc.ABC):
    """Base class: subclasses build their elastic modules and implement ``_apply_arch`` and ``_export``."""

    name: str = "supernet"

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self._arch: Any = None

    @abc.abstractmethod
    def _apply_arch(self, arch: Any) -> None:
        """Configure the elastic ops for a validated arch."""

    @abc.abstractmethod
    def _export(self, arch: Any) -> tuple[nn.Module, dict[str, Any]]:
        """Static module with copied active weights, and its config."""

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """Constructor arguments (besides the space) that recreate this supernet."""

    @property
    def arch(self) -> Any:
        if self._arch is None:
            raise RuntimeError("no active architecture: call set_arch(arch) or use `with supernet.use(arch):`")
        return self._arch

    def set_arch(self, arch: Any) -> None:
        arch = self.space.validate(arch)
        self._apply_arch(arch)
        self._arch = arch

    @contextmanager
    def use(self, arch: Any) -> Iterator[Supernet]:
        previous = self._arch
        self.set_arch(arch)
        try:
            yield self
        finally:
            if previous is not None:
                self.set_arch(previous)
            else:
                self._arch = None

    def clear_derived(self) -> None:
        """Drop the memoised slices/kernels of grad-free forwards (needed only after writes through ``.data``)."""
        for module in self.modules():
            derived = getattr(module, "_derived", None)
            if isinstance(derived, DerivedWeight):
                derived.clear()

    def train(self, mode: bool = True) -> Supernet:
        self.clear_derived()
        return super().train(mode)

    def export(self, arch: Any | None = None) -> Exported:
        """A static ``nn.Module`` computing what the supernet computes for ``arch`` (in eval mode)."""
        arch = self.arch if arch is None else self.space.validate(arch)
        with self.use(arch), torch.no_grad():
            module, config = self._export(arch)
        module.train(self.training)
        return Exported(module=module, config=config, arch=arch, space=self.space)

    def full_spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this supernet (name, space spec, kwargs), JSON-able."""
        return {"name": self.name, "space": self.space.spec(), "kwargs": self.spec()}


SUPERNETS: Registry[Supernet] = Registry("supernet")


def create_supernet(name: str, space: SearchSpace | str | dict[str, Any], **kwargs: Any) -> Supernet:
    """Create a registered supernet for a space given as object, registered name, or spec dict."""
    if isinstance(space, str):
        space = create_space(space)
    elif isinstance(space, dict):
        spec = dict(space)
        space = create_space(spec.pop("name"), **spec)
    return SUPERNETS.create(name, space=space, **kwargs)


def supernet_from_spec(spec: dict[str, Any]) -> Supernet:
    return create_supernet(spec["name"], spec["space"], **spec.get("kwargs", {}))
