"""Reusable pytest contract suites for search spaces and supernets (CONVENTIONS: tests, contract suites).

A plug-in author subclasses a contract and provides the object under test; every property below then runs
against it: encoding round trips, determinism, canonical ids, export equivalence, gradients, MACs/params.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from search_spaces import SearchSpace


def _resolution(space: Any, arch: Any) -> int:
    r = getattr(arch, "r", None) or getattr(space, "resolution", None)
    if r is None:
        raise TypeError(f"cannot tell the input resolution of {type(arch).__name__}; give the arch an `r` "
                        "or the space a `resolution`")
    return int(r)


class SearchSpaceContract:
    """Properties every search space must have. Set ``space`` on the subclass."""

    space: SearchSpace
    n_samples: int = 30

    def test_encode_decode_roundtrip(self) -> None:
        rng = np.random.default_rng(0)
        lo, hi = self.space.bounds()
        for _ in range(self.n_samples):
            a = self.space.sample(rng)
            x = self.space.encode(a)
            assert np.all((lo <= x) & (x <= hi))
            assert self.space.decode(x) == a
            assert hash(self.space.decode(x)) == hash(a)

    def test_json_roundtrip_and_id(self) -> None:
        a = self.space.sample(1)
        b = self.space.from_json(self.space.to_json(a))
        assert a == b and self.space.arch_id(a) == self.space.arch_id(b)

    def test_sampling_is_seeded(self) -> None:
        assert self.space.sample(np.random.default_rng(3)) == self.space.sample(np.random.default_rng(3))

    def test_operators_stay_in_space(self) -> None:
        rng = np.random.default_rng(2)
        a, b = self.space.sample(rng), self.space.sample(rng)
        self.space.validate(self.space.mutate(a, rng, 0.5))
        self.space.validate(self.space.crossover(a, b, rng))
        assert self.space.mutate(a, rng, 0.0) == a

    def test_distinct_ids_for_distinct_archs(self) -> None:
        rng = np.random.default_rng(4)
        archs = {self.space.sample(rng) for _ in range(self.n_samples)}
        assert len({self.space.arch_id(a) for a in archs}) == len(archs)


class SupernetContract:
    """Properties every supernet must have. Implement ``make_supernet``."""

    atol: float = 1e-5

    def make_supernet(self) -> Any:
        raise TypeError("subclasses of SupernetContract implement make_supernet()")

    def _archs(self, space: Any) -> list[Any]:
        rng = np.random.default_rng(0)
        return [space.min_arch(), space.max_arch(), space.sample(rng), space.sample(rng)]

    def _input(self, space: Any, arch: Any, n: int = 2) -> torch.Tensor:
        r = _resolution(space, arch)
        return torch.randn(n, getattr(space, "in_chans", 3), r, r, generator=torch.Generator().manual_seed(0))

    def test_export_computes_the_supernet_output(self) -> None:
        net = self.make_supernet().eval()
        for arch in self._archs(net.space):
            x = self._input(net.space, arch)
            with torch.no_grad(), net.use(arch):
                ref = net(x)
            static = net.export(arch).module.eval()
            with torch.no_grad():
                assert torch.allclose(static(x), ref, atol=self.atol)

    def test_gradients_reach_the_active_weights(self) -> None:
        net = self.make_supernet().train()
        arch = net.space.max_arch()
        net.set_arch(arch)
        net(self._input(net.space, arch, 4)).logsumexp(1).sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

    def test_forward_depends_only_on_input_and_arch(self) -> None:
        net = self.make_supernet().eval()
        a, b = self._archs(net.space)[2:]
        x = self._input(net.space, a)
        with torch.no_grad():
            with net.use(a):
                first = net(x)
            with net.use(b):
                net(self._input(net.space, b))
            with net.use(a):
                assert torch.equal(net(x), first)

    def test_bad_arch_is_rejected(self) -> None:
        net = self.make_supernet()
        with pytest.raises((TypeError, ValueError)):
            net.set_arch(object())
