"""The embedded default supernet and measurements load offline and reproduce their measured accuracies."""

from __future__ import annotations

import pytest
import torch

from nas.data import create_data
from nas.data.fashion_mnist import DEFAULT_ROOT
from nas.embedded import DEFAULT, available, load_default, path
from nas.evaluation import EvalSet, evaluate_subnets


def test_default_loads_with_at_least_300_distinct_measured_subnets():
    assert DEFAULT in available()
    net, rows = load_default()
    assert net.space.name == "ofa_mbv3_fmnist" and not net.training
    assert len(rows) >= 302 and len({r["arch_id"] for r in rows}) == len(rows)
    ids = {r["arch_id"] for r in rows}
    assert net.space.min_arch().id in ids and net.space.max_arch().id in ids
    for r in rows:
        assert r["arch"].id == r["arch_id"] and r["macs"] == net.space.macs(r["arch"])
    top1 = {r["arch_id"]: r["top1"] for r in rows}
    assert top1[net.space.max_arch().id] > 85.0 and min(top1.values()) > 75.0  # a trained supernet
    with pytest.raises(KeyError, match="available"):
        path("nope")


@pytest.mark.skipif(not (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not installed")
def test_measured_accuracy_of_the_smallest_subnet_is_reproduced():
    torch.set_num_threads(1)
    net, rows = load_default()
    row = next(r for r in rows if r["arch_id"] == net.space.min_arch().id)
    data = create_data("fashion_mnist")  # the data the measurements were taken on (see the README)
    evalset = EvalSet(data, split="val", calib_images=2000, calib_batch=200, seed=0)
    again = evaluate_subnets(net, [row["arch"]], evalset)[0]
    assert again["top1"] == pytest.approx(row["top1"], abs=0.1)  # within 5 of 5000 images across machines
    assert again["loss"] == pytest.approx(row["loss"], abs=1e-3)
