"""Enabled choices: a sub-space given by per-gene-group value lists (OFA's progressive-shrinking phases).

Genes are grouped by the leading letters of their names (``ks0..ks19`` -> ``ks``, ``e*`` -> ``e``, ``d*`` -> ``d``,
``r``; NB201's ``edge1<-0`` -> ``edge``). A group is restricted to a list of values or to a keyword: ``all``,
``max`` (the last choice), ``min`` (the first), ``topN`` / ``bottomN`` (the N last / first choices). Values outside
the space's choices are rejected with the phase name, the value and the allowed values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from search_spaces import InvalidArchError, SearchSpace

__all__ = ["Choices", "ChoiceError", "gene_group"]

_GROUP = re.compile(r"^[A-Za-z_]+")
_KEYWORD = re.compile(r"^(all|max|min|top(\d+)|bottom(\d+))$")


class ChoiceError(ValueError):
    """An enabled-choice list names an unknown gene group or a value outside the space."""


def gene_group(name: str) -> str:
    m = _GROUP.match(name)
    return m.group(0) if m else name


class Choices:
    """Allowed values per gene of ``space``; sampling, min and max stay inside them."""

    def __init__(self, space: SearchSpace, enabled: Mapping[str, Any] | None = None, *, label: str = "choices"):
        self.space, self.label = space, label
        self.groups: dict[str, list[int]] = {}
        for i, g in enumerate(space.genes()):
            self.groups.setdefault(gene_group(g.name), []).append(i)
        enabled = dict(enabled or {})
        unknown = sorted(set(enabled) - set(self.groups))
        if unknown:
            raise ChoiceError(f"{label}: unknown gene group(s) {unknown} for space {space.name!r}; "
                              f"groups are {sorted(self.groups)}")
        genes = space.genes()
        self.allowed: list[tuple[int, ...]] = [tuple(range(len(g.choices))) for g in genes]
        for group, spec in enabled.items():
            for i in self.groups[group]:
                self.allowed[i] = self._resolve(group, genes[i].choices, spec)

    def _resolve(self, group: str, choices: Sequence[Any], spec: Any) -> tuple[int, ...]:
        n = len(choices)
        if isinstance(spec, str):
            m = _KEYWORD.match(spec)
            if not m:
                raise ChoiceError(f"{self.label}: {group}={spec!r} is not a value list or one of "
                                  f"'all', 'max', 'min', 'topN', 'bottomN'")
            if m.group(2) or m.group(3):
                k = int(m.group(2) or m.group(3))
                if not 1 <= k <= n:
                    raise ChoiceError(f"{self.label}: {group}={spec!r} needs 1 <= N <= {n}")
                return tuple(range(n - k, n)) if m.group(2) else tuple(range(k))
            return {"all": tuple(range(n)), "max": (n - 1,), "min": (0,)}[spec]
        values = list(spec) if isinstance(spec, (list, tuple)) else [spec]
        if not values:
            raise ChoiceError(f"{self.label}: {group} enables no value; allowed values are {list(choices)}")
        out = []
        for v in values:
            matches = [j for j, c in enumerate(choices) if c == v]
            if not matches:
                raise ChoiceError(f"{self.label}: {group}={v!r} is not a choice of space {self.space.name!r}; "
                                  f"allowed values are {list(choices)}")
            out.append(matches[0])
        return tuple(sorted(set(out)))

    def values(self, group: str) -> list[Any]:
        """Enabled values of a group (union over its genes), in the space's choice order."""
        if group not in self.groups:
            raise ChoiceError(f"unknown gene group {group!r}; groups are {sorted(self.groups)}")
        genes = self.space.genes()
        idx = sorted({j for i in self.groups[group] for j in self.allowed[i]})
        return [genes[self.groups[group][0]].choices[j] for j in idx]

    def sample(self, rng: np.random.Generator) -> Any:
        x = np.array([a[rng.integers(len(a))] for a in self.allowed])
        return self.space.decode(x)

    def min_arch(self) -> Any:
        return self.space.decode(np.array([a[0] for a in self.allowed]))

    def max_arch(self) -> Any:
        return self.space.decode(np.array([a[-1] for a in self.allowed]))

    def contains(self, arch: Any) -> bool:
        """Whether every active gene of ``arch`` takes an enabled value."""
        try:
            x, mask = self.space.encode(arch), self.space.active(arch)
        except InvalidArchError:
            return False
        return all(int(v) in a for v, a, on in zip(x, self.allowed, mask) if on)

    def to_dict(self) -> dict[str, list[Any]]:
        return {g: self.values(g) for g in self.groups}
