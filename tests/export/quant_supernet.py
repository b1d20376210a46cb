"""A quantised Fashion-MNIST supernet for export tests: the embedded float OFA-MBv3 supernet (trained) wrapped by
EQ-Net quantisers initialised by their L_p calibration on training images (no quantisation-aware training: at
W8A8 this is post-training quantisation of a trained network)."""

from __future__ import annotations

from pathlib import Path

import torch

from nas.checkpoints import save_weights
from nas.data import create_data
from nas.resolve import load_trained_supernet
from search_spaces import create_space
from supernets.quant import QuantSupernet, calibrate

EMBEDDED = Path(__file__).resolve().parents[2] / "nas" / "embedded" / "ofa_mbv3_fmnist"


def make_quant_supernet(directory: Path, *, calib_images: int = 128, steps: int = 20, seed: int = 0) -> Path:
    fp = load_trained_supernet(EMBEDDED)
    net = QuantSupernet(create_space("quant_ofa_mbv3_fmnist"))
    with net.unwrapped() as inner:
        inner.load_state_dict(fp.state_dict())
    images = torch.cat(create_data("fashion_mnist").calibration_batches(calib_images, calib_images, seed, "train"))
    calibrate(net, images, seed=seed, steps=steps)
    return save_weights(directory, net, {"made_by": "tests/export/quant_supernet.py (float embedded + L_p init)"})
