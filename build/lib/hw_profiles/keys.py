"""Operator signatures: parse OFA's latency-table key grammar back into :class:`~search_spaces.layers.LayerSpec`.

The grammar is the one of Once-for-All's ``MBv3LatencyTable`` (mit-han-lab/once-for-all,
``ofa/nas/efficiency_predictor/latency_lookup_table.py``), produced by :meth:`LayerSpec.key`, with this
engine's compatible extension ``-bits:N`` for quantised layers (absent means 32-bit float). Parsing is the inverse of
``LayerSpec.key()``: ``parse_key(spec.key()).key() == spec.key()`` for every spec. The few fields the grammar does not
carry take OFA MobileNetV3's values (stem kernel 3 with h-swish, final-expand and feature-mix h-swish).
"""

from __future__ import annotations

import re

from search_spaces.layers import LayerSpec

__all__ = ["KeyFormatError", "parse_key"]


class KeyFormatError(ValueError):
    """A latency-table key does not follow the operator-signature grammar."""


_SHAPE = r"(\d+)x(\d+)x(\d+)"
_BITS = r"(?:-bits:(\d+))?"
_MBCONV = re.compile(
    rf"expanded_conv-input:{_SHAPE}-output:{_SHAPE}-expand:(\d+)-kernel:(\d+)-stride:(\d+)"
    rf"-idskip:([01])-se:([01])-hs:([01]){_BITS}$"
)
_PLAIN = re.compile(rf"(Conv|Conv_1|AvgPool2D|Conv_2)-input:{_SHAPE}-output:{_SHAPE}{_BITS}$")
_LOGITS = re.compile(rf"Logits-input:1x1x(\d+)-output:(\d+){_BITS}$")
_PLAIN_OPS = {"Conv": "conv", "Conv_1": "final_expand", "AvgPool2D": "pool", "Conv_2": "feature_mix"}
GRAMMAR = (
    "expanded_conv-input:HxWxC-output:HxWxC-expand:MID-kernel:K-stride:S-idskip:0|1-se:0|1-hs:0|1[-bits:B], "
    "Conv|Conv_1|AvgPool2D|Conv_2-input:HxWxC-output:HxWxC[-bits:B], Logits-input:1x1xC-output:N[-bits:B]"
)


def _stride(in_hw: int, out_hw: int, key: str) -> int:
    for s in (1, 2, 4):
        if (in_hw - 1) // s + 1 == out_hw:
            return s
    raise KeyFormatError(f"no stride in (1, 2, 4) maps {in_hw} to {out_hw} in key {key!r}")


def _bits(group: str | None) -> int:
    return 32 if group is None else int(group)


def parse_key(key: str) -> LayerSpec:
    """The :class:`LayerSpec` whose ``key()`` is ``key``; raises :class:`KeyFormatError` naming the grammar."""
    if not isinstance(key, str):
        raise KeyFormatError(f"a latency-table key must be a string, got {type(key).__name__} {key!r}")
    m = _MBCONV.match(key)
    if m:
        h, w, cin, oh, ow, cout, mid, k, s, skip, se, hs, bits = m.groups()
        if h != w or oh != ow:
            raise KeyFormatError(f"only square feature maps are supported, got key {key!r}")
        spec = LayerSpec("mbconv", int(h), int(cin), int(cout), kernel=int(k), stride=int(s), mid_c=int(mid),
                         skip=skip == "1", se=se == "1", act="hswish" if hs == "1" else "relu", bits=_bits(bits))
        if spec.out_hw != int(oh):
            raise KeyFormatError(f"stride {s} maps {h} to {spec.out_hw}, not {oh}, in key {key!r}")
        return spec
    m = _PLAIN.match(key)
    if m:
        name, h, w, cin, oh, ow, cout, bits = m.groups()
        if h != w or oh != ow:
            raise KeyFormatError(f"only square feature maps are supported, got key {key!r}")
        op = _PLAIN_OPS[name]
        if op == "pool":
            return LayerSpec("pool", int(h), int(cin), int(cout), bits=_bits(bits))
        stride = _stride(int(h), int(oh), key)
        kernel = 3 if op == "conv" else 1
        return LayerSpec(op, int(h), int(cin), int(cout), kernel=kernel, stride=stride, act="hswish", bits=_bits(bits))
    m = _LOGITS.match(key)
    if m:
        cin, cout, bits = m.groups()
        return LayerSpec("classifier", 1, int(cin), int(cout), bits=_bits(bits))
    raise KeyFormatError(f"unrecognised operator signature {key!r}; expected one of: {GRAMMAR}")
