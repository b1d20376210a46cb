"""``nas.search accuracy=measured accuracy.checkpoint=...``: accuracy measured on a trained supernet (LINAS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from nas.checkpoints import load_supernet
from nas.conf import CONF_DIR
from nas.data import create_data
from nas.evaluation import EvalSet, evaluate_subnets
from nas.search.app import search_from_config
from nas.search.measured import SupernetConfigError

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "nas" / "embedded" / "ofa_mbv3_fmnist"
SMALL = ["accuracy.n_images=200", "accuracy.calib_images=100", "accuracy.calib_batch=100", "budget=200"]


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose("search", overrides=[f"out_dir={tmp_path / 'r'}", "progress=false", *SMALL, *overrides])


def _fmnist_or_skip():
    try:
        return create_data("fashion_mnist")
    except (FileNotFoundError, ValueError) as exc:  # the set-up command installs dataset-fashion-mnist
        pytest.skip(f"Fashion-MNIST not installed: {exc}")


def test_measured_search_evaluates_new_subnets_each_round_and_records_real_accuracy(tmp_path):
    dm = _fmnist_or_skip()
    cfg = _cfg(tmp_path, "accuracy=measured", f"accuracy.checkpoint={EMBEDDED}", "searcher.kwargs.rounds=2",
               "searcher.kwargs.batch_size=3")
    outcome = search_from_config(cfg)
    result = outcome.result
    assert result.n == 6 and outcome.experiment.name == "supernet"
    ids = [r["arch_id"] for r in result.records()]
    assert len(set(ids)) == 6  # the second round proposes only archs not measured in the first
    # the recorded top-1 is the supernet's real BN-recalibrated accuracy on the same held-out images
    net = load_supernet(EMBEDDED).eval()
    evalset = EvalSet(dm, split="val", n_images=200, calib_images=100, calib_batch=100, seed=0)
    rows = result.records()[:2]
    again = evaluate_subnets(net, [net.space.from_dict(r["arch"]) for r in rows], evalset)
    np.testing.assert_allclose([r["top1"] for r in rows], [a["top1"] for a in again])
    assert json.loads((tmp_path / "r" / "front_ranked.json").read_text())
    assert "measured val top-1" in outcome.experiment.accuracy_note


def test_checkpoint_of_another_space_is_refused_before_any_measurement(tmp_path):
    cfg = _cfg(tmp_path, "accuracy=measured", f"accuracy.checkpoint={EMBEDDED}", "search_space=ofa_mbv3_tiny")
    with pytest.raises(SupernetConfigError, match="search_space asks for"):
        search_from_config(cfg)
    assert not (tmp_path / "r").exists()


def test_missing_checkpoint_is_named(tmp_path):
    cfg = _cfg(tmp_path, "accuracy=measured", f"accuracy.checkpoint={tmp_path / 'nope'}")
    with pytest.raises(SupernetConfigError, match="does not exist"):
        search_from_config(cfg)
