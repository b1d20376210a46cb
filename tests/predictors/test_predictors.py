"""Predictor contract on real measured accuracies (OFA-MBv3 ImageNet, ../shared/yardsticks) and on small spaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from predictors import (
    PREDICTORS,
    ArchSpaceError,
    NotFittedError,
    ProbabilisticPredictor,
    SpaceMismatchError,
    create_predictor,
    kendall_tau,
    load_predictor,
    rmse,
)
from predictors._io import PredictorFormatError
from predictors.datasets import read_ofa_accuracy_csv
from search_spaces import create_space
from search_spaces.registry import UnknownNameError

YARDSTICKS = Path(__file__).resolve().parents[2] / "../shared/yardsticks"
DEV_CSV = YARDSTICKS / "ofa_mbv3_imagenet" / "dev.csv"

#: small but real settings for each registered predictor (tests must stay fast)
FAST: dict[str, dict[str, Any]] = {
    "gp": {"max_iter": 60},
    "mlp": {"steps": 150},
    "mlp_ensemble": {"members": 3, "steps": 120},
    "ridge_svr": {"n_grid": 4, "cv": 3},
    "gbt": {"n_estimators": 80},
    "ensemble": {"members": [["gp", {"max_iter": 60}], ["mlp", {"steps": 150}]]},
}
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    *[(name, kw) for name, kw in FAST.items()],
    ("mlp", {"steps": 150, "rank_loss": "pairwise"}),
    ("mlp", {"steps": 150, "rank_loss": "listwise"}),
]


def test_every_registered_predictor_is_covered() -> None:
    assert sorted(FAST) == PREDICTORS.names()


@pytest.fixture(scope="module")
def ofa() -> dict[str, Any]:
    if not DEV_CSV.is_file():
        pytest.skip(f"reference data not found at {DEV_CSV} (../shared/yardsticks beside the checkout)")
    space = create_space("ofa_mbv3")
    archs, y, _ = read_ofa_accuracy_csv(DEV_CSV, space)
    perm = np.random.default_rng(0).permutation(len(archs))
    tr, te = perm[:150], perm[150:]
    return {"space": space, "train": [archs[i] for i in tr], "y_train": y[tr], "test": [archs[i] for i in te],
            "y_test": y[te], "macs_test": np.array([space.macs(archs[i]) for i in te], dtype=float)}


def test_dev_csv_deduplicated(ofa: dict[str, Any]) -> None:
    archs = ofa["train"] + ofa["test"]
    assert len(archs) == len(set(archs)) == len({a.id for a in archs}) == 1051


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=lambda v: v if isinstance(v, str) else "-".join(
    str(x) for x in v.values() if isinstance(x, str)) or "default")
def test_beats_mean_and_macs_on_held_out_real_data(ofa: dict[str, Any], name: str, kw: dict[str, Any]) -> None:
    model = create_predictor(name, space=ofa["space"], seed=0, **kw).fit(ofa["train"], ofa["y_train"])
    pred = model.predict(ofa["test"])
    y = ofa["y_test"]
    tau_macs = kendall_tau(y, ofa["macs_test"])  # ranking by MACs alone: ~0.80
    assert kendall_tau(y, pred) > tau_macs + 0.05
    assert rmse(y, pred) < 0.3 * rmse(y, np.full_like(y, ofa["y_train"].mean()))


def test_gp_std_is_calibrated(ofa: dict[str, Any]) -> None:
    model = create_predictor("gp", space=ofa["space"]).fit(ofa["train"], ofa["y_train"])
    z = np.abs(ofa["y_test"] - model.predict(ofa["test"])) / model.predict_std(ofa["test"])
    assert 0.8 <= np.mean(z < 1.96) <= 0.99  # nominal 95 % interval
    assert 0.45 <= np.mean(z < 0.674) <= 0.8  # nominal 50 %


def _toy(space_name: str, n: int, seed: int = 0) -> tuple[Any, list[Any], np.ndarray]:
    """Archs of a small space with a synthetic accuracy: log-MACs trend + effects of the first genes + noise."""
    space = create_space(space_name)
    rng = np.random.default_rng(seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(n)))
    oh = space.onehot_many(archs)
    effect = np.random.default_rng(1).normal(0, 0.3, oh.shape[1]) * (np.arange(oh.shape[1]) < 20)
    y = 70 + 2 * np.log([space.macs(a) for a in archs]) + oh @ effect + rng.normal(0, 0.05, len(archs))
    return space, archs, y


@pytest.mark.parametrize("name", sorted(FAST))
def test_fit_is_deterministic_under_a_seed(name: str) -> None:
    space, archs, y = _toy("ofa_mbv3_tiny", 60)
    preds = [create_predictor(name, space=space, seed=3, **FAST[name]).fit(archs[:40], y[:40]).predict(archs[40:])
             for _ in range(2)]
    np.testing.assert_array_equal(preds[0], preds[1])


@pytest.mark.parametrize("name", sorted(FAST))
def test_save_load_round_trips_exactly(name: str, tmp_path: Path) -> None:
    space, archs, y = _toy("ofa_mbv3_tiny", 60)
    model = create_predictor(name, space=space, seed=1, **FAST[name]).fit(archs[:40], y[:40])
    path = model.save(tmp_path / "model", provenance={"note": "test"})
    loaded = load_predictor(path)
    np.testing.assert_array_equal(loaded.predict(archs[40:]), model.predict(archs[40:]))
    if isinstance(model, ProbabilisticPredictor):
        assert isinstance(loaded, ProbabilisticPredictor)
        np.testing.assert_allclose(loaded.predict_std(archs[40:]), model.predict_std(archs[40:]), rtol=1e-9)
    header = json.loads(path.read_text())
    assert header["format_version"] == 1 and header["predictor"] == name and header["library_version"]
    assert header["space"]["name"] == "ofa_mbv3_tiny" and header["provenance"] == {"note": "test"}
    assert header["fitted"]["n_train"] == 40 and loaded.get_params() == json.loads(json.dumps(model.get_params()))
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}  # no pickle beside them


def test_load_checks_space_and_integrity(tmp_path: Path) -> None:
    space, archs, y = _toy("ofa_mbv3_tiny", 40)
    path = create_predictor("gp", space=space, max_iter=20).fit(archs, y).save(tmp_path / "gp")
    load_predictor(path, space=create_space("ofa_mbv3_tiny"))
    with pytest.raises(SpaceMismatchError, match="ofa_mbv3_tiny"):
        load_predictor(path, space=create_space("ofa_mbv3_tiny", resolutions=(28,)))
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(PredictorFormatError, match="SHA-256"):
        load_predictor(path)


@pytest.mark.parametrize("name", sorted(FAST))
def test_refuses_architectures_of_another_space(name: str) -> None:
    space, archs, y = _toy("ofa_mbv3_tiny", 30)
    model = create_predictor(name, space=space, **FAST[name]).fit(archs, y)
    nb = create_space("nb201_tiny")
    with pytest.raises(ArchSpaceError, match="ofa_mbv3_tiny"):
        model.predict([archs[0], nb.sample(0)])
    with pytest.raises(ArchSpaceError, match="ofa_mbv3_tiny"):  # same arch type, another space's block count
        model.predict([create_space("ofa_mbv3").sample(0)])


@pytest.mark.parametrize("name", sorted(FAST))
def test_predict_before_fit_raises(name: str, tmp_path: Path) -> None:
    space = create_space("nb201_tiny")
    model = create_predictor(name, space=space, **FAST[name])
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict([space.sample(0)])
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "x")
    if isinstance(model, ProbabilisticPredictor):
        with pytest.raises(NotFittedError):
            model.predict_std([space.sample(0)])


@pytest.mark.parametrize("space_name", ["quant_nb201_tiny", "quant_ofa_mbv3_tiny", "nb201_tiny"])
def test_joint_and_other_spaces_use_generic_features(space_name: str, tmp_path: Path) -> None:
    space, archs, y = _toy(space_name, 80)
    # generic features only: every space now also offers layer_cost/slot_cost (layers()), which this test is not about
    model = create_predictor("gp", space=space, max_iter=60, features=("cost", "onehot")).fit(archs[:60], y[:60])
    tau_macs = kendall_tau(y[60:], np.array([space.macs(a) for a in archs[60:]], dtype=float))
    assert kendall_tau(y[60:], model.predict(archs[60:])) > max(0.5, tau_macs)
    X = space.encode_many(archs[60:])
    np.testing.assert_array_equal(model.predict_encoded(X), model.predict(archs[60:]))
    loaded = load_predictor(model.save(tmp_path / "joint"))
    np.testing.assert_array_equal(loaded.predict(archs[60:]), model.predict(archs[60:]))


def test_bad_arguments_name_the_options() -> None:
    space, archs, y = _toy("nb201_tiny", 20)
    with pytest.raises(UnknownNameError, match="'gp'"):
        create_predictor("gpp", space=space)
    with pytest.raises(UnknownNameError, match="pairwise"):
        create_predictor("mlp", space=space, rank_loss="pairwse")
    with pytest.raises(UnknownNameError, match="rank_gauss"):
        create_predictor("gp", space=space, target="rank_gaus")
    with pytest.raises(ValueError, match="one target per architecture"):
        create_predictor("gp", space=space).fit(archs, y[:-1])
    with pytest.raises(ValueError, match="finite"):
        create_predictor("gp", space=space).fit(archs, np.where(np.arange(len(y)) == 3, np.nan, y))
