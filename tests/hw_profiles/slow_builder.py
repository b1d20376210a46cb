"""A network builder for the validation worker whose networks run three times over once ``NAS_TEST_SLOW_AFTER``
networks have been built: a machine that slowed down between validation passes."""

from __future__ import annotations

import os
from typing import Any

import torch

from supernets.static import build_network as _build

_built = 0


class _Thrice(torch.nn.Module):
    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net(x)
        self.net(x)
        return self.net(x)


def build_network(layers: Any) -> Any:
    global _built
    _built += 1
    net = _build(layers)
    return _Thrice(net) if _built > int(os.environ["NAS_TEST_SLOW_AFTER"]) else net
