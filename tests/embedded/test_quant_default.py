"""The embedded quantised default (EQ-Net over the Fashion-MNIST OFA-MBv3 space) loads offline, its measured pairs
are the CQAP draw nas.evaluate makes (same seed, same pairs), span low to high average bits, and one measured
top-1 is reproduced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.data import create_data
from nas.data.fashion_mnist import DEFAULT_ROOT
from nas.embedded import QUANT_DEFAULT, available, load
from nas.evaluation import EvalSet, evaluate_subnets, sample_archs
from search_spaces.errors import BadInputError
from search_spaces.quant import JointSpace
from search_spaces.quant_costs import average_bits


@pytest.fixture(scope="module")
def default():
    return load(QUANT_DEFAULT)


def test_loads_with_cqap_drawn_measurements(default):
    net, rows = default
    assert QUANT_DEFAULT in available() and isinstance(net.space, JointSpace) and net.name == "quant"
    assert net.space.base.name == "ofa_mbv3_fmnist" and not net.training
    assert len(rows) >= 400 and len({r["arch_id"] for r in rows}) == len(rows)
    drawn = sample_archs(net.space, len(rows) - 2, 0, draw="cqap")  # the README's nas.evaluate draw=cqap seed=0
    assert [a.id for a in drawn] == [r["arch_id"] for r in rows]
    avg = np.array([average_bits(net.space, r["arch"], "w") for r in rows[2:]])
    assert avg.min() < 4.0 and avg.max() > 7.0 and np.histogram(avg, bins=[3, 4.5, 6, 8.01])[0].min() > 50
    top1 = {r["arch_id"]: r["top1"] for r in rows}
    assert top1[drawn[1].id] > 85.0  # the largest net at 8 bits: a trained quantised supernet
    lo = np.array([r["top1"] for r in rows[2:]])[avg < 4.0].mean()
    hi = np.array([r["top1"] for r in rows[2:]])[avg > 7.0].mean()
    assert hi > lo  # fewer bits cost accuracy
    with pytest.raises(BadInputError, match="choose one of"):
        sample_archs(net.space, 3, 0, draw="gauss")


@pytest.mark.skipif(not (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not installed")
def test_a_measured_pair_is_reproduced(default):
    torch.set_num_threads(1)
    net, rows = default
    row = rows[2]
    evalset = EvalSet(create_data("fashion_mnist"), split="val", n_images=2000, calib_images=500, calib_batch=250,
                      seed=0)
    again = evaluate_subnets(net, [row["arch"]], evalset)[0]
    assert again["top1"] == pytest.approx(row["top1"], abs=0.1)
    assert again["loss"] == pytest.approx(row["loss"], abs=2e-3)
