"""The domain of a latency table or calibrated latency model: which layers its numbers are valid for.

A latency model fitted on OFA's 3-channel 160-224 px Note10 tables says nothing reliable about a 1-channel 28 px
network, and a table measured for one space says nothing about an op it never timed. A :class:`Domain` records,
per op, the range of input feature-map sizes (for the stem: the network's input resolution), the range of channel
widths over all layers (a 1-channel input is outside a 3..1536 domain), the batch size and the bit-widths seen when
the model was fitted (or the table measured). Pricing a layer outside the ranges warns once per (op, field) with the
range and the value (:class:`OutOfDomainWarning`), or refuses under ``strict`` (:class:`OutOfDomainError`); an op
outside the domain is never priced (:class:`UncoveredOpError`, naming the op).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search_spaces.errors import BadInputError
from search_spaces.layers import LayerSpec

__all__ = ["Domain", "OutOfDomainWarning", "OutOfDomainError", "UncoveredOpError", "CHANNEL_FIELDS"]

#: the LayerSpec fields covered by the domain's channel range (0 = field unused by the op)
CHANNEL_FIELDS = ("in_c", "out_c", "mid_c")


class OutOfDomainWarning(UserWarning):
    """A layer lies outside the range a latency table or model was measured/fitted on."""


class OutOfDomainError(BadInputError):
    """Under ``strict=true``: a layer lies outside the domain of the latency table or model."""


class UncoveredOpError(BadInputError, KeyError):
    """No table entry or model covers this op; it is never priced as zero."""


@dataclass(frozen=True)
class Domain:
    """``ranges[op] = (lo, hi)`` of input feature-map sizes; ``channels = (lo, hi)``; ``batch``; allowed ``bits``."""

    ranges: Mapping[str, tuple[int, int]]
    channels: tuple[int, int]
    batch: int | None = None
    bits: tuple[int, ...] = (32,)
    source: str = ""
    _warned: set[tuple[str, str]] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def of(cls, specs: Iterable[LayerSpec], *, batch: int | None = None, source: str = "") -> Domain:
        """The smallest domain holding ``specs`` (the layers a model was fitted on or a table measured)."""
        ranges: dict[str, tuple[int, int]] = {}
        bits: set[int] = set()
        chans: list[int] = []
        for s in specs:
            lo, hi = ranges.get(s.op, (s.in_hw, s.in_hw))
            ranges[s.op] = (min(lo, s.in_hw), max(hi, s.in_hw))
            chans += [c for c in (s.in_c, s.out_c, s.mid_c) if c > 0]
            bits.add(s.bits)
        if not ranges:
            raise ValueError("a domain needs at least one layer")
        return cls(ranges, (min(chans), max(chans)), batch, tuple(sorted(bits)), source)

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(sorted(self.ranges))

    def violations(self, spec: LayerSpec) -> list[tuple[str, str]]:
        """``(field, message)`` for every range that ``spec`` falls outside."""
        out = []
        lo, hi = self.ranges[spec.op]
        if not lo <= spec.in_hw <= hi:
            out.append(("in_hw", f"{spec.op} input size {spec.in_hw} px is outside [{lo}, {hi}]"))
        lo, hi = self.channels
        for f in CHANNEL_FIELDS:
            v = getattr(spec, f)
            if v and not lo <= v <= hi:
                out.append((f, f"{spec.op} {f}={v} channels is outside [{lo}, {hi}]"))
        if spec.bits not in self.bits:
            out.append(("bits", f"{spec.op} bits={spec.bits} is not among {list(self.bits)}"))
        return out

    def check(self, specs: Sequence[LayerSpec], *, strict: bool = False, what: str = "latency model") -> None:
        """Raise for an uncovered op; warn once per (op, field) outside the domain, or raise when ``strict``."""
        for s in specs:
            if s.op not in self.ranges:
                raise UncoveredOpError(f"{what} has no entry or model for op {s.op!r} (layer {s.key()}); it covers "
                                       f"ops {list(self.ops)}{self._from()}. Measure a profile for this space with "
                                       "`python -m nas.profile`")
            for f, message in self.violations(s):
                text = f"{what}: {message}, the domain it was measured/fitted on{self._from()}"
                if strict:
                    raise OutOfDomainError(f"{text} (strict=true refuses out-of-domain pricing)")
                if (s.op, f) not in self._warned:
                    self._warned.add((s.op, f))
                    warnings.warn(f"{text}; its error estimate does not hold there", OutOfDomainWarning,
                                  stacklevel=3)

    def _from(self) -> str:
        return f" ({self.source})" if self.source else ""

    def to_dict(self) -> dict[str, Any]:
        return {"in_hw": {op: list(r) for op, r in self.ranges.items()}, "channels": list(self.channels),
                "batch": self.batch, "bits": list(self.bits), "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Domain:
        ranges = {op: (int(r[0]), int(r[1])) for op, r in d["in_hw"].items()}
        lo, hi = d["channels"]
        return cls(ranges, (int(lo), int(hi)), d.get("batch"), tuple(d.get("bits", (32,))), d.get("source", ""))
