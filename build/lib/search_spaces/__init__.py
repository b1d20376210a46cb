"""Search spaces as data: genes, architectures, encodings and analytic cost models. Imports no torch."""

from __future__ import annotations

from search_spaces.base import SPACES, Gene, InvalidArchError, SearchSpace, as_generator, create_space
from search_spaces.layers import LayerSpec, make_divisible
from search_spaces.nb201 import NB201_OPS, NB201Arch, NB201IndexMap, NB201Space
from search_spaces.ofa_mbv3 import MBv3Arch, OFAMobileNetV3Space
from search_spaces.ofa_mbv3_variants import ofa_mbv3_fmnist  # noqa: F401  (registers ofa_mbv3_fmnist)
from search_spaces.vit import ViTArch, ViTSpace

__all__ = [
    "SPACES", "Gene", "InvalidArchError", "SearchSpace", "as_generator", "create_space", "LayerSpec",
    "make_divisible", "NB201_OPS", "NB201Arch", "NB201IndexMap", "NB201Space", "MBv3Arch", "OFAMobileNetV3Space",
    "ViTArch", "ViTSpace",
]

# Quantisation policies and joint spaces; importing registers "quant" and "quant_<space>" for the spaces above.
from search_spaces import quant as _quant  # noqa: E402,F401
