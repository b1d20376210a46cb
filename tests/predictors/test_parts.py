"""Features, target transforms, exported trees, metrics and the shipped predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from nas.testing.sweep import BareSpace
from predictors import (
    FeatureEncoder,
    FeatureUnavailableError,
    available_pretrained,
    kendall_tau,
    load_pretrained,
    top_k_precision,
)
from predictors.datasets import read_ofa_accuracy_csv
from predictors.features import LayerCost, SlotCost, resolve_features, segments
from predictors.targets import LOG_GAP_CEILING, AutoLogGap, AutoTarget, LogGap, RankGauss
from predictors.trees import export_trees, predict_trees
from search_spaces import create_space
from search_spaces.layers import layer_macs

DEV_CSV = Path(__file__).resolve().parents[2] / "../shared/yardsticks/ofa_mbv3_imagenet/dev.csv"


def test_auto_features_follow_what_the_space_offers() -> None:
    assert resolve_features(create_space("ofa_mbv3"), "auto") == ("cost", "layer_cost", "slot_cost", "onehot")
    assert resolve_features(create_space("nb201"), "auto") == ("cost", "layer_cost", "slot_cost", "onehot")
    bare = BareSpace()  # no layers(), no macs()
    assert resolve_features(bare, "auto") == ("onehot",)
    with pytest.raises(FeatureUnavailableError, match="layers"):
        FeatureEncoder(bare, ["layer_cost"])


def test_layer_cost_segments_partition_the_network_macs() -> None:
    space = create_space("ofa_mbv3")
    feat = LayerCost(space)
    assert feat.n_segments == 9  # stem+first block, 5 stages, final expand+pool, feature mix, classifier
    archs = [space.sample(i) for i in range(5)] + [space.min_arch(), space.max_arch()]
    macs = np.expm1(feat(archs)[:, 0::2]).sum(1)
    np.testing.assert_allclose(macs, [space.macs(a) for a in archs], rtol=1e-9)
    layers = space.layers(space.min_arch())
    seg = segments(layers)
    assert seg == sorted(seg) and layer_macs(layers[0]) > 0


def test_slot_cost_places_each_layer_in_its_stage_slot() -> None:
    space = create_space("ofa_mbv3")
    feat = SlotCost(space)
    # stem + first block, 4 slots in each of 5 stages, final expand + pool, feature mix, classifier
    assert feat.width == 2 + 5 * 4 + 2 + 1 + 1
    archs = [space.sample(i) for i in range(5)] + [space.min_arch(), space.max_arch()]
    F = feat(archs)
    np.testing.assert_allclose(np.expm1(F).sum(1), [space.macs(a) for a in archs], rtol=1e-9)
    for row, arch in zip(F, archs):
        stage_slots = row[2:22].reshape(5, 4)
        # a stage of depth d fills exactly its first d slots
        np.testing.assert_array_equal(stage_slots > 0, np.arange(4)[None, :] < np.asarray(arch.d)[:, None])


def test_encoder_standardises_only_continuous_columns() -> None:
    space = create_space("ofa_mbv3")
    archs = [space.sample(i) for i in range(50)]
    enc = FeatureEncoder(space)
    X = enc.fit(archs)
    binary = enc.binary_mask()
    assert binary.sum() == space.onehot(archs[0]).size
    np.testing.assert_array_equal(X[:, binary], space.onehot_many(archs))
    varying = X[:, ~binary].std(0) > 0
    np.testing.assert_allclose(X[:, ~binary][:, varying].mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(X[:, ~binary][:, varying].std(0), 1, atol=1e-9)


def test_rank_gauss_is_monotone_and_inverts_training_targets() -> None:
    y = np.array([10.0, 10.0, 85.0, 90.0, 91.5, 93.0, 94.0, 92.0])
    tf = RankGauss()
    z = tf.fit(y)
    assert z[0] == z[1] and np.all(np.diff(z[np.argsort(y, kind="stable")]) >= 0)
    np.testing.assert_allclose(tf.inverse(z), y)
    grid = np.linspace(-4, 4, 101)
    assert np.all(np.diff(tf.inverse(grid)) > 0)  # strictly monotone, also beyond the training range
    assert np.all(tf.slope(grid) > 0)


def test_auto_target_uses_rank_gauss_only_with_outliers() -> None:
    rng = np.random.default_rng(0)
    smooth = 75 + rng.normal(0, 1, 200)
    floored = np.concatenate([90 + rng.normal(0, 1, 190), np.full(10, 10.0)])
    assert not AutoTarget.has_outliers(smooth) and AutoTarget.has_outliers(floored)
    auto = AutoTarget()
    auto.fit(floored)
    assert auto.chosen == "rank_gauss"


def test_log_gap_is_a_concave_monotone_warp_with_exact_inverse() -> None:
    y = 75 + np.random.default_rng(0).normal(0, 1, 200)
    tf = LogGap()
    z = tf.fit(y)
    assert tf.c == pytest.approx(y.max() + LOG_GAP_CEILING * (y.max() - y.min()))
    np.testing.assert_allclose(tf.inverse(z), y, rtol=0, atol=1e-12)
    order = np.argsort(y)
    assert np.all(np.diff(z[order]) > 0) and np.all(np.diff(z[order]) / np.diff(y[order]) > 0)
    gaps = np.diff(z[order]) / np.diff(y[order])  # dz/dy = 1 / (c - y) grows towards the ceiling: top stretched
    assert np.all(np.diff(gaps) >= -1e-9)
    grid = np.linspace(z.min() - 1, z.max() + 0.1, 50)
    h = 1e-6
    np.testing.assert_allclose(tf.slope(grid), (tf.inverse(grid + h) - tf.inverse(grid - h)) / (2 * h), rtol=1e-5)
    back = LogGap()
    back.load_arrays(tf.arrays())
    np.testing.assert_array_equal(back(y), z)
    with pytest.raises(ValueError, match="ceiling"):
        tf(np.array([tf.c + 1.0]))


def test_auto_log_gap_falls_back_to_rank_gauss_with_outliers() -> None:
    rng = np.random.default_rng(0)
    smooth, floored = 75 + rng.normal(0, 1, 200), np.concatenate([90 + rng.normal(0, 1, 190), np.full(10, 10.0)])
    auto = AutoLogGap()
    auto.fit(smooth)
    assert auto.chosen == "log_gap"
    reloaded = AutoLogGap()
    reloaded.load_arrays(auto.arrays())
    np.testing.assert_array_equal(reloaded.inverse(np.array([-3.0, -2.5])), auto.inverse(np.array([-3.0, -2.5])))
    auto.fit(floored)
    assert auto.chosen == "rank_gauss"


def test_exported_trees_predict_like_sklearn() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    y = X[:, 0] ** 2 + np.sin(3 * X[:, 1]) + 0.1 * rng.normal(size=200)
    model = GradientBoostingRegressor(n_estimators=40, max_depth=3, learning_rate=0.1, random_state=0).fit(X, y)
    Xt = rng.normal(size=(50, 6))
    ours = model.init_.constant_.reshape(-1)[0] + 0.1 * predict_trees(export_trees(model), Xt)
    np.testing.assert_allclose(ours, model.predict(Xt), rtol=1e-12, atol=1e-12)


def test_metrics_on_known_cases() -> None:
    y = np.arange(20.0)
    assert kendall_tau(y, y) == 1.0 and kendall_tau(y, -y) == -1.0
    assert top_k_precision(y, y, 0.1) == 1.0
    swapped = y.copy()
    swapped[[19, 0]] = swapped[[0, 19]]
    assert top_k_precision(y, swapped, 0.1) == 0.5


def test_shipped_ofa_predictor_loads_without_reference_data() -> None:
    assert "ofa_mbv3_imagenet" in available_pretrained()
    model = load_pretrained("ofa_mbv3_imagenet")
    space = create_space("ofa_mbv3")
    pred = model.predict([space.max_arch(), space.sample(0)])
    assert np.all((pred > 65) & (pred < 82))
    with pytest.raises(KeyError, match="ofa_mbv3_imagenet"):
        load_pretrained("ofa_mbv3_imagenet_v2")


def test_shipped_ofa_predictor_fits_its_data() -> None:
    if not DEV_CSV.is_file():
        pytest.skip(f"reference data not found at {DEV_CSV}")
    space = create_space("ofa_mbv3")
    archs, y, _ = read_ofa_accuracy_csv(DEV_CSV, space)
    model = load_pretrained("ofa_mbv3_imagenet", space=space)
    assert model.n_train_ == len(archs)
    assert kendall_tau(y, model.predict(archs)) > 0.97  # in-sample: it was fitted on every one of them
