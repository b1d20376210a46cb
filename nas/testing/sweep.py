"""Registry sweep of space capabilities: every registered space (or a user's own) against its own claims.

:func:`check_space` asserts, for one space: encode/decode round trips; that ``layers(arch)`` prices the space
(MACs and parameters summed over layers equal ``space.macs``/``space.params`` and, exactly, what
``torch.utils.flop_counter`` and ``numel`` count on the module a registered supernet exports); that a ``layer_table``
yields the same layers and the same population prices as ``layers``; that an ``active_mask`` equals ``active`` row by
row; that ``from_id`` inverts ``arch_id`` on 200 random architectures; bit-ops of quantised spaces; and that every
capability the space lacks raises a :class:`~search_spaces.errors.MissingCapabilityError` naming the space and the
capability.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces.base import CAPABILITIES, Gene, InvalidArchError, SearchSpace, has_capability, require
from search_spaces.errors import MissingCapabilityError
from search_spaces.layers import layer_bitops, layer_macs, layer_params
from supernets import SUPERNETS, create_supernet

__all__ = ["check_space", "check_ids", "exported_counts", "sweep_archs", "BareSpace"]


@dataclass(frozen=True)
class _Choice:
    x: int

    @property
    def id(self) -> str:
        return str(self.x)

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Choice:
        return cls(int(d["x"]))


@dataclass(frozen=True)
class BareSpace(SearchSpace):
    """A space with only the four abstract methods (no layers, no input shape): what a consumer meets in a user's
    minimal space, for tests of the missing-capability paths."""

    name: str = "bare"

    def genes(self) -> tuple[Gene, ...]:
        return (Gene("x", (1, 2)),)

    def _from_values(self, values: Sequence[Any]) -> _Choice:
        return _Choice(values[0])

    def _to_values(self, arch: Any) -> tuple[Any, ...]:
        return (arch.x,)

    def arch_type(self) -> type:
        return _Choice


def sweep_archs(space: SearchSpace, n: int = 3, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [space.min_arch(), space.max_arch(), *[space.sample(rng) for _ in range(n)]]


def exported_counts(space: SearchSpace, arch: Any) -> tuple[int, int] | None:
    """(MACs, parameters) counted on the static module exported by the first registered supernet that accepts the
    space (built on the meta device when it can be, so large spaces cost no compute); None if none accepts it."""
    for name in SUPERNETS.names():
        for device in ("meta", "cpu"):
            try:
                with torch.device(device):
                    net = create_supernet(name, space).eval()
                    module = net.export(arch).module.eval()
                    with FlopCounterMode(display=False) as counter, torch.no_grad():
                        module(torch.zeros(1, *require(space, "input_shape", needed_by="the sweep")(arch)))
                return counter.get_total_flops() // 2, sum(p.numel() for p in module.parameters())
            except TypeError:  # this supernet does not serve this space
                break
            except (RuntimeError, NotImplementedError):  # an op that the meta device cannot run
                continue
    return None


def check_space(space: SearchSpace, *, n: int = 3, seed: int = 0, export: bool = True, n_ids: int = 200) -> None:
    """Assert every capability claim of ``space`` (see the module docstring)."""
    archs = sweep_archs(space, n, seed)
    for a in archs:
        assert space.decode(space.encode(a)) == a, f"{space.name}: decode(encode(a)) != a for {a}"
    _check_missing(space)
    if has_capability(space, "from_id"):
        check_ids(space, n=n_ids, seed=seed)
    if not has_capability(space, "layers"):
        return
    for a in archs:
        layers = space.layers(a)  # type: ignore[attr-defined]
        macs, params = sum(map(layer_macs, layers)), sum(map(layer_params, layers))
        assert macs == space.macs(a), f"{space.name}: layer MACs {macs} != space.macs {space.macs(a)}"  # type: ignore
        assert params == space.params(a), f"{space.name}: layer params {params} != {space.params(a)}"  # type: ignore
        if has_capability(space, "bitops"):
            assert sum(map(layer_bitops, layers)) == space.bitops(a), f"{space.name}: layer bit-ops differ"  # type: ignore
    if export:
        a = archs[-1]
        counted = exported_counts(space, a)
        assert counted is not None, f"no registered supernet exports space {space.name!r}"
        layers = space.layers(a)  # type: ignore[attr-defined]
        assert counted == (sum(map(layer_macs, layers)), sum(map(layer_params, layers))), \
            f"{space.name}: exported module counts {counted} differ from layers()"
    _check_table(space, archs)


def check_ids(space: SearchSpace, *, n: int = 200, seed: int = 0) -> None:
    """``from_id`` is the exact inverse of ``arch_id`` on ``n`` random architectures and both extremes, and a
    string that is no id is an :class:`InvalidArchError` naming the string, the space and a valid id."""
    for a in sweep_archs(space, n, seed):
        text = space.arch_id(a)
        back = space.from_id(text)  # type: ignore[attr-defined]
        assert back == a and space.arch_id(back) == text, f"{space.name}: from_id({text!r}) gave {back}"
    example = space.arch_id(space.max_arch())
    for bad in ("", "not-an-arch-id", example + "-1", example[:-1] + "?"):
        try:
            space.from_id(bad)  # type: ignore[attr-defined]
        except InvalidArchError as exc:
            assert space.name in str(exc) and repr(bad)[1:-1][:40] in str(exc), str(exc)
            assert "a valid id looks like" in str(exc), str(exc)
        else:
            raise AssertionError(f"{space.name}: from_id({bad!r}) did not raise")


def _check_table(space: SearchSpace, archs: list[Any]) -> None:
    X = space.encode_many(archs)
    if has_capability(space, "active_mask"):
        np.testing.assert_array_equal(space.active_mask(X), np.stack([space.active(a) for a in archs]))  # type: ignore
    if not has_capability(space, "layer_table"):
        return
    table = space.layer_table()  # type: ignore[attr-defined]
    for a, x in zip(archs, X):
        assert Counter(table.layers_of(x)) == Counter(space.layers(a)), f"{space.name}: table != layers for {a}"  # type: ignore
    from hw_profiles import create_hw_profile
    from hw_profiles.pricing import LayerwisePricer

    model = create_hw_profile("macs")
    np.testing.assert_array_equal(model.evaluate_encoded(space, X).values,
                                  LayerwisePricer(space, model.price_layers).price_archs(archs).values)


def _check_missing(space: SearchSpace) -> None:
    for capability in CAPABILITIES:
        if has_capability(space, capability):
            continue
        try:
            require(space, capability, needed_by="the registry sweep")
        except MissingCapabilityError as exc:
            assert space.name in str(exc) and capability in str(exc), str(exc)
        else:
            raise AssertionError(f"require({space.name!r}, {capability!r}) did not raise")
