"""EQ-Net's CQAP encoding (Xu et al., ICCV 2023) as the predictor feature ``cqap`` of joint quantisation spaces.

Layout: the mode one-hots first (weight granularity, weight symmetry, activation symmetry: one column per choice
the space allows; EQ-Net's 6 dimensions), then one-hot weight bits of every free slot, then one-hot activation bits
of every free slot. The first and last slots are fixed at 8/8 and not encoded. Slots the architecture does not run
are all-zero. EQ-Net fixes the architecture; when the joint space also searches it, the base space's own one-hot
comes first so that different architectures with the same policy differ. (The reference encoder writes 0 for
"asymmetric", so asymmetric and symmetric read the same there; both columns are set correctly here.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from predictors.features import FEATURES, Featurizer
from search_spaces import SearchSpace

__all__ = ["CQAPEncoding"]

_MODES = ("w_granularity", "w_symmetric", "a_symmetric")


@FEATURES.register("cqap")
class CQAPEncoding(Featurizer):
    """Mode one-hots + one-hot weight and activation bits per free slot (base one-hot first if the arch is free)."""

    binary = True

    @classmethod
    def unavailable(cls, space: SearchSpace) -> str | None:
        from search_spaces.quant import JointSpace

        if not isinstance(space, JointSpace):
            return "CQAP encodes quantisation policies; it needs a joint space (e.g. quant_ofa_mbv3_fmnist)"
        if space.mode_scope != "global":
            return "CQAP encodes one global granularity/symmetry (mode_scope='global')"
        return None

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        sp: Any = space
        self.free = sp._free_slots()
        self.mode_choices = sp._mode_choices()
        self.n_modes = sum(len(c) for c in self.mode_choices)

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        sp: Any = self.space
        nw, na, nf = len(sp.w_bits), len(sp.a_bits), len(self.free)
        out = np.zeros((len(archs), self.n_modes + nf * (nw + na)))
        for r, joint in enumerate(archs):
            layers = joint.policy.layers
            first = next(q for q in layers if q is not None)
            off = 0
            for name, choices in zip(_MODES, self.mode_choices):
                out[r, off + choices.index(getattr(first, name))] = 1.0
                off += len(choices)
            for j, slot in enumerate(self.free):
                q = layers[slot]
                if q is not None:
                    out[r, off + j * nw + sp.w_bits.index(q.w_bits)] = 1.0
                    out[r, off + nf * nw + j * na + sp.a_bits.index(q.a_bits)] = 1.0
        if sp.fixed_arch is None:
            out = np.hstack([sp.base.onehot_many([j.arch for j in archs]).astype(np.float64), out])
        return out
