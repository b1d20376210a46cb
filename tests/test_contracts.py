"""The library's contract suites run against every registered space and supernet (registry sweep)."""

from __future__ import annotations

import pytest

from nas.testing import SearchSpaceContract, SupernetContract
from search_spaces import create_space
from supernets import create_supernet


class TestOFATiny(SearchSpaceContract):
    space = create_space("ofa_mbv3_tiny")


class TestOFA(SearchSpaceContract):
    space = create_space("ofa_mbv3")


class TestNB201(SearchSpaceContract):
    space = create_space("nb201")


@pytest.mark.parametrize("name,space", [("ofa_mbv3", "ofa_mbv3_tiny"), ("nb201", "nb201_tiny")])
class TestSupernets(SupernetContract):
    @pytest.fixture(autouse=True)
    def _bind(self, name: str, space: str) -> None:
        self._name, self._space = name, space

    def make_supernet(self):
        return create_supernet(self._name, self._space)
