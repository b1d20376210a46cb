"""Accuracy predictors over architectures of a search space (scikit-learn style ``fit``/``predict``).

Registered in :data:`PREDICTORS` (``create_predictor(name, space=...)``):

* ``gp``: Gaussian process on cost-aware features, calibrated ``predict_std`` (the most sample-efficient);
* ``mlp``: Once-for-All's 3 x 400 MLP, optional pairwise/listwise ranking loss;
* ``mlp_ensemble``: deep ensemble of MLPs with ``predict_std``;
* ``ridge_svr``: DyNAS-T's Ridge vs RBF-SVR chosen by cross-validation;
* ``gbt``: gradient-boosted trees over a linear cost prior;
* ``ensemble``: weighted average of registered predictors (default GP + MLP).

Features come only from the space (:mod:`predictors.features`; ``cqap``: EQ-Net's policy encoding).
``save``/``load_predictor`` use JSON + safetensors; :func:`load_pretrained` gives the shipped OFA-MBv3 ImageNet
predictor.
"""

from __future__ import annotations

from predictors.base import (
    PREDICTORS,
    ArchSpaceError,
    FeaturePredictor,
    NotFittedError,
    Predictor,
    ProbabilisticPredictor,
    SpaceMismatchError,
    create_predictor,
    load_predictor,
    register,
)
from predictors.ensemble import EnsemblePredictor
from predictors.features import FEATURES, FeatureEncoder, FeatureUnavailableError, Featurizer
from predictors.features_cqap import CQAPEncoding
from predictors.gp import GPPredictor
from predictors.linear import RidgeSVRPredictor
from predictors.metrics import kendall_tau, rmse, score, spearman_rho, top_k_precision
from predictors.mlp import MLPEnsemble, MLPPredictor
from predictors.pretrained import available_pretrained, load_pretrained
from predictors.trees import GBTPredictor

__all__ = [
    "PREDICTORS", "ArchSpaceError", "FeaturePredictor", "NotFittedError", "Predictor", "ProbabilisticPredictor",
    "SpaceMismatchError", "create_predictor", "load_predictor", "register", "EnsemblePredictor", "FEATURES",
    "FeatureEncoder", "Featurizer", "FeatureUnavailableError", "GPPredictor", "RidgeSVRPredictor", "kendall_tau",
    "rmse", "score", "spearman_rho", "top_k_precision", "MLPEnsemble", "MLPPredictor", "available_pretrained",
    "load_pretrained", "GBTPredictor", "CQAPEncoding",
]
