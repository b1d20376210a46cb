"""Plain, static PyTorch modules built from JSON-able configs, with no supernet code involved.

An exported subnet is rebuilt from its config by :func:`build_from_config`: a registry of builders keyed by the
config's ``type``. MobileNetV3-style networks are described by a list of :class:`~search_spaces.LayerSpec`
(the same values that price layers in latency tables), so ``build_layer`` also serves the LUT builder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from search_spaces.layers import LayerSpec
from search_spaces.registry import Registry

__all__ = [
    "ACTIVATIONS", "STATIC_BUILDERS", "ConvBNAct", "SqueezeExcite", "MBConv", "MBv3Head", "SequentialNet",
    "build_layer", "build_network", "build_from_config",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hswish": nn.Hardswish, "none": nn.Identity}


def make_act(name: str, *, inplace: bool = False) -> nn.Module:
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}") from None
    return cls(inplace=inplace)  # nn.Identity ignores its arguments


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BN -> activation, with 'same' padding; the activation runs in place (as torchvision's)."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, *, groups: int = 1,
                 act: str = "relu", bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, kernel // 2, groups=groups, bias=False)
        if bn:
            self.bn = nn.BatchNorm2d(out_c)
        self.act = make_act(act, inplace=True)


class SqueezeExcite(nn.Module):
    """MobileNetV3 SE: global pool, 1x1 reduce (bias) + ReLU, 1x1 expand (bias) + hard-sigmoid gate."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.expand(nn.functional.relu(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual block: [1x1 expand] -> depthwise k x k -> [SE] -> 1x1 project (+ identity)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.expand = ConvBNAct(spec.in_c, spec.mid_c, act=spec.act) if spec.has_expand else None
        self.depthwise = ConvBNAct(spec.mid_c, spec.mid_c, spec.kernel, spec.stride, groups=spec.mid_c, act=spec.act)
        self.se = SqueezeExcite(spec.mid_c, spec.se_c) if spec.se else None
        self.project = ConvBNAct(spec.mid_c, spec.out_c, act="none")
        self.skip = spec.skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.skip else y


class MBv3Head(nn.Module):
    """Global pool -> 1x1 feature mix (no BN) + h-swish -> dropout -> linear classifier."""

    def __init__(self, in_c: int, mix_c: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.feature_mix = ConvBNAct(in_c, mix_c, act="hswish", bn=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(mix_c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feature_mix(x.mean((2, 3), keepdim=True)).flatten(1)
        return self.classifier(self.dropout(x))


_LAYER_BUILDERS = {
    "conv": lambda s: ConvBNAct(s.in_c, s.out_c, s.kernel, s.stride, act=s.act),
    "mbconv": MBConv,
    "final_expand": lambda s: ConvBNAct(s.in_c, s.out_c, act=s.act),
    "pool": lambda s: nn.AdaptiveAvgPool2d(1),
    "feature_mix": lambda s: nn.Sequential(ConvBNAct(s.in_c, s.out_c, act=s.act, bn=False), nn.Flatten(1)),
    "classifier": lambda s: nn.Linear(s.in_c, s.out_c),
}


def build_layer(spec: LayerSpec) -> nn.Module:
    """A module computing one layer in isolation (used by the latency-table builder)."""
    try:
        return _LAYER_BUILDERS[spec.op](spec)
    except KeyError:
        raise ValueError(f"unknown layer op {spec.op!r}; allowed: {sorted(_LAYER_BUILDERS)}") from None


class SequentialNet(nn.Module):
    """Stem and blocks as a sequence, then the MobileNetV3 head (pool, feature mix, classifier)."""

    def __init__(self, layers: Sequence[LayerSpec], dropout: float = 0.0) -> None:
        super().__init__()
        ops = [spec.op for spec in layers]
        if ops[-4:] != ["final_expand", "pool", "feature_mix", "classifier"]:
            raise ValueError(f"a network must end with final_expand, pool, feature_mix, classifier; got {ops[-4:]}")
        self.blocks = nn.Sequential(*[build_layer(spec) for spec in layers[:-3]])
        fm, cls = layers[-2], layers[-1]
        self.head = MBv3Head(fm.in_c, fm.out_c, cls.out_c, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


def build_network(layers: Sequence[LayerSpec], dropout: float = 0.0) -> SequentialNet:
    return SequentialNet(layers, dropout)


STATIC_BUILDERS: Registry[nn.Module] = Registry("static network type")


@STATIC_BUILDERS.register("mbv3")
def _build_mbv3(layers: Sequence[dict[str, Any]], dropout: float = 0.0) -> nn.Module:
    return build_network([LayerSpec(**d) for d in layers], dropout)


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a static network from its JSON config (``{"type": ..., **builder kwargs}``)."""
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind is None:
        raise KeyError(f"network config needs a 'type'; known types: {STATIC_BUILDERS.names()}")
    try:
        return STATIC_BUILDERS.get(kind)(**cfg)
    except TypeError as exc:
        raise ValueError(f"bad config for network type {kind!r}: {exc}") from None
