"""Further registered variants of Once-for-All's MobileNetV3 space (Cai et al., ICLR 2020) for small images.

``ofa_mbv3_fmnist``: the embedded default's space. Same structure and choice kinds as ``ofa_mbv3_tiny``
(1-channel input, 10 classes, narrow widths, 3 kernels x 3 expand ratios per block, depth 1-2 per stage), but the
first elastic stage keeps the stem's resolution (strides 1, 2, 2, 1, 2 instead of 2, 2, 2, 1, 2), so a 28 px
Fashion-MNIST image ends at 2 x 2 rather than 1 x 1, and resolutions 24/28/32 make resolution elastic too.
"""

from __future__ import annotations

from typing import Any

from search_spaces.base import SPACES
from search_spaces.ofa_mbv3 import OFAMobileNetV3Space

__all__ = ["ofa_mbv3_fmnist"]


@SPACES.register("ofa_mbv3_fmnist")
def ofa_mbv3_fmnist(**kwargs: Any) -> OFAMobileNetV3Space:
    """Small grey-scale OFA-MBv3 space for Fashion-MNIST (largest subnet 2.1M/2.9M/3.6M MACs at 24/28/32 px)."""
    defaults: dict[str, Any] = dict(
        base_widths=(8, 8, 16, 16, 24, 24, 32, 64, 96), strides=(1, 2, 2, 1, 2), kernels=(3, 5, 7),
        expands=(2, 3, 4), depths=(1, 2), resolutions=(24, 28, 32), in_chans=1, n_classes=10,
    )
    defaults.update(kwargs)
    return OFAMobileNetV3Space(name="ofa_mbv3_fmnist", **defaults)
