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
from search_spaces.errors import MissingCapabilityError
from search_spaces.registry import Registry
from supernets.ops import DerivedWeight

__all__ = ["Supernet", "Exported", "SUPERNETS", "create_supernet", "supernet_from_spec", "grad_norm"]


@dataclass
class Exported:
    """A static subnet: the module, the config that rebuilds it, and what it was cut from."""

    module: nn.Module
    config: dict[str, Any]
    arch: Any
    space: SearchSpace


def grad_norm(*modules: nn.Module | None) -> float:
    """Sum of the L2 norms of the present parameter gradients of ``modules`` (PA&DA's ``sum ||grad W||``).

    An elastic op's full weight gets zero gradient outside its active slice, so this is the norm of the weights
    the active choice selected."""
    return float(sum(float(p.grad.norm()) for m in modules if m is not None for p in m.parameters()
                     if p.grad is not None))


class Supernet(nn.Module, abc.ABC):
    """Base class: subclasses build their elastic modules and implement ``_apply_arch`` and ``_export``."""

    name: str = "supernet"

    #: the space class this supernet serves; another space is refused with a TypeError (how sweeps and the
    #: differentiable search tell which registered supernet serves a space)
    space_type: type | None = None

    def __init__(self, space: SearchSpace) -> None:
        if self.space_type is not None and not isinstance(space, self.space_type):
            raise TypeError(f"{type(self).__name__} serves {self.space_type.__name__} spaces, got "
                            f"{type(space).__name__}")
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

    # -- differentiable NAS (supernets.mixture) -----------------------------------------------------------------
    #: the mixture modes this supernet's forward can compute (empty: it has no mixture form)
    mixture_modes: tuple[str, ...] = ()

    def mixture_choices(self, mode: str) -> dict[str, tuple[Any, ...]]:
        """Choice points (gene name -> choice values) that carry architecture logits in ``mode``."""
        from supernets.mixture import MixtureError, check_mode

        if check_mode(mode) not in self.mixture_modes:
            have = f"modes {list(self.mixture_modes)}" if self.mixture_modes else "no mixture form"
            raise MixtureError(f"supernet {self.name!r} (space {self.space.name!r}) cannot compute a {mode!r} "
                               f"mixture: it has {have}")
        return self._mixture_choices(mode)

    def _mixture_choices(self, mode: str) -> dict[str, tuple[Any, ...]]:
        """A supernet that lists ``mixture_modes`` names its choice points here."""
        raise MissingCapabilityError(self, "mixture_choices", needed_by=f"a {mode!r} mixture")

    def mixture_edges(self, mode: str) -> dict[str, int]:
        """PC-DARTS edge normalisation: node name -> number of incoming edges (empty when not applicable)."""
        return {}

    def derive(self, picked: dict[str, Any]) -> Any:
        """The discrete architecture of one choice per choice point (argmax of the logits)."""
        raise MissingCapabilityError(self, "derive", needed_by="differentiable search")

    @contextmanager
    def mixed(self, soft: Any) -> Iterator[Supernet]:
        """Forward computes the mixture ``soft`` (a :class:`supernets.mixture.SoftArch`) until the block ends."""
        self.mixture_choices(soft.mode)
        previous = getattr(self, "_soft", None)
        self._set_mixture(soft)
        try:
            yield self
        finally:
            self._set_mixture(previous)

    def _set_mixture(self, soft: Any) -> None:
        self._soft = soft

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
