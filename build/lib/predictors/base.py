"""The predictor contract, in scikit-learn's style: ``fit(archs, y) -> self``, ``predict(archs) -> ndarray`` and,
for predictors with uncertainty, ``predict_std(archs)``.

A predictor is built for one search space and takes its features only from that space (see
:mod:`predictors.features`). Hyper-parameters are constructor keywords stored under the same attribute names
(``get_params``), so a fitted predictor saves as JSON + safetensors (:mod:`predictors._io`) and is rebuilt from the
registry by name: no pickle, no code in the file. Registered predictors live in :data:`PREDICTORS`.
"""

from __future__ import annotations

import abc
import inspect
import json
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from predictors._io import read_bundle, write_bundle
from predictors._threads import single_thread
from predictors.features import FeatureEncoder
from predictors.targets import TARGETS, TargetTransform
from search_spaces import SPACES, InvalidArchError, SearchSpace, create_space
from search_spaces.registry import Registry

__all__ = [
    "Predictor", "ProbabilisticPredictor", "FeaturePredictor", "PREDICTORS", "register", "create_predictor",
    "load_predictor", "NotFittedError", "ArchSpaceError", "SpaceMismatchError", "space_from_spec",
]


class NotFittedError(ValueError, AttributeError):
    """``predict`` was called before ``fit`` (same bases as scikit-learn's NotFittedError)."""


class ArchSpaceError(InvalidArchError):
    """An architecture given to a predictor does not belong to the space the predictor was built for."""


class SpaceMismatchError(ValueError):
    """A saved predictor was loaded for a different search space than it was fitted on."""


def _json_norm(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=list)


def space_from_spec(spec: dict[str, Any]) -> SearchSpace:
    """Rebuild a registered space from ``space.spec()`` (also when the factory fixes some fields itself)."""
    rest = dict(spec)
    name = rest.pop("name")
    try:
        space = create_space(name, **rest)
    except TypeError:
        # e.g. a factory that passes width_mult itself: give it only the fields that differ from its defaults
        default = json.loads(_json_norm(SPACES.create(name).spec()))
        saved = json.loads(_json_norm(spec))
        space = create_space(name, **{k: v for k, v in rest.items() if default.get(k) != saved[k]})
    if _json_norm(space.spec()) != _json_norm(spec):
        raise SpaceMismatchError(f"could not rebuild space {name!r} from its spec {spec}")
    return space


def _library_version() -> str:
    try:
        return version("nas-engine")
    except PackageNotFoundError:
        return "unknown"


class Predictor(abc.ABC):
    """Base class of all predictors: argument checks, the space check, saving. Subclasses work on archs."""

    name: ClassVar[str] = ""

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        if not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
        self.space = space
        self.seed = int(seed)
        self.n_train_ = 0

    # -- scikit-learn style params -------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor keywords (without ``space``), JSON-able; ``type(self)(space, **get_params())`` clones."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p not in ("self", "space")}

    @property
    @abc.abstractmethod
    def fitted(self) -> bool: ...

    # -- public API -----------------------------------------------------------------------------------
    def fit(self, archs: Sequence[Any], y: Sequence[float] | np.ndarray) -> Predictor:
        archs = list(archs)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(archs) != len(y):
            raise ValueError(f"fit needs one target per architecture, got {len(archs)} archs and {len(y)} targets")
        if len(archs) < 2:
            raise ValueError(f"fit needs at least 2 measured architectures, got {len(archs)}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"targets must be finite, got {y[~np.isfinite(y)][:5].tolist()}")
        self._check_archs(archs)
        with single_thread():
            self._fit_archs(archs, y)
        self.n_train_ = len(archs)
        return self

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        """Predicted metric of each architecture (same units as the ``y`` given to ``fit``)."""
        archs = self._ready(archs)
        with single_thread():
            return np.asarray(self._predict_archs(archs), dtype=np.float64).reshape(-1)

    def predict_encoded(self, X: np.ndarray) -> np.ndarray:
        """``predict`` on rows of ``space.encode`` (what searchers hold for whole populations)."""
        return self.predict([self.space.decode(x) for x in np.asarray(X)])

    def save(self, path: str | Path, *, provenance: dict[str, Any] | None = None) -> Path:
        """Write ``<path>.json`` + ``<path>.safetensors``; returns the JSON path."""
        if not self.fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; nothing to save")
        state, arrays = self._export()
        header = {"predictor": self.name, "params": self.get_params(), "space": self.space.spec(),
                  "library_version": _library_version(), "fitted": {"n_train": self.n_train_, **state},
                  "provenance": provenance or {}}
        return write_bundle(path, json.loads(_json_norm(header)), arrays)

    def _ready(self, archs: Sequence[Any]) -> list[Any]:
        if not self.fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(archs, y) before predicting")
        archs = list(archs)
        self._check_archs(archs)
        return archs

    def _check_archs(self, archs: Sequence[Any]) -> None:
        for i, arch in enumerate(archs):
            try:
                self.space.validate(arch)
            except InvalidArchError as exc:
                raise ArchSpaceError(f"{type(self).__name__} is built for space {self.space.name!r}; "
                                     f"architecture #{i} does not belong to it: {exc}") from None

    # -- what a subclass defines (on validated lists of archs) ----------------------------------------
    @abc.abstractmethod
    def _fit_archs(self, archs: list[Any], y: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _predict_archs(self, archs: list[Any]) -> np.ndarray: ...

    @abc.abstractmethod
    def _export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as (JSON-able dict, named arrays)."""

    @abc.abstractmethod
    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_export` (``state`` also holds ``n_train``)."""


class ProbabilisticPredictor(Predictor):
    """A predictor that also gives the standard deviation of its prediction (for exploration in a search)."""

    def predict_std(self, archs: Sequence[Any]) -> np.ndarray:
        archs = self._ready(archs)
        with single_thread():
            return np.asarray(self._predict_std_archs(archs), dtype=np.float64).reshape(-1)

    @abc.abstractmethod
    def _predict_std_archs(self, archs: list[Any]) -> np.ndarray: ...


class FeaturePredictor(Predictor):
    """A predictor on the feature matrix of :class:`~predictors.features.FeatureEncoder`.

    Subclasses implement ``_fit(X, y)``, ``_predict(X)``, ``_state()`` and ``_load_state``; ``features`` names
    the featurizers (``"auto"``: cost priors where the space has a cost model, plus the masked one-hot) and
    ``target`` the scale the model learns on (:mod:`predictors.targets`; ``_fit``/``_predict`` see that scale).
    """

    def __init__(self, space: SearchSpace, *, features: str | Sequence[str] = "auto", target: str = "identity",
                 seed: int = 0) -> None:
        super().__init__(space, seed=seed)
        self.features = features if isinstance(features, str) else list(features)
        TARGETS.get(target)  # unknown names raise, listing the options
        self.target = target
        self.encoder: FeatureEncoder | None = None
        self._target_tf: TargetTransform = TARGETS.create(target)

    @property
    def fitted(self) -> bool:
        return self.encoder is not None and self.encoder.mean is not None

    def _fit_archs(self, archs: list[Any], y: np.ndarray) -> None:
        self.encoder = None
        encoder = FeatureEncoder(self.space, self.features)
        X = encoder.fit(archs)
        self._target_tf = TARGETS.create(self.target)
        z = self._target_tf.fit(y)
        self.encoder = encoder
        self._fit(X, z)

    def _features_of(self, archs: list[Any]) -> np.ndarray:
        if self.encoder is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet")
        return self.encoder(archs)

    def _predict_archs(self, archs: list[Any]) -> np.ndarray:
        return self._target_tf.inverse(self._predict(self._features_of(archs)))

    def _std_to_target(self, X: np.ndarray, std: np.ndarray) -> np.ndarray:
        """A standard deviation on the learning scale, carried to the target scale at the predicted mean."""
        return std * self._target_tf.slope(self._predict(X))

    def _export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.encoder is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet")
        meta, arrays = self._state()
        target = {f"target.{k}": v for k, v in self._target_tf.arrays().items()}
        return ({"features": list(self.encoder.names), "state": meta},
                {**self.encoder.arrays(), **target, **{f"model.{k}": v for k, v in arrays.items()}})

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        encoder = FeatureEncoder(self.space, state["features"])
        encoder.load_arrays(arrays)
        self.encoder = encoder
        self._target_tf = TARGETS.create(self.target)
        self._target_tf.load_arrays({k[7:]: v for k, v in arrays.items() if k.startswith("target.")})
        self._load_state(state["state"], {k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        self.n_train_ = int(state["n_train"])

    @abc.abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _predict(self, X: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted model as (JSON-able scalars, named arrays)."""

    @abc.abstractmethod
    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...


PREDICTORS: Registry[Predictor] = Registry("predictor")
P = TypeVar("P", bound=type[Predictor])


def register(name: str) -> Callable[[P], P]:
    """Class decorator: register a predictor class under ``name`` (also its ``.name``, used when saving)."""

    def deco(cls: P) -> P:
        cls.name = name
        PREDICTORS.add(name, cls)
        return cls

    return deco


def _as_space(space: SearchSpace | str | dict[str, Any]) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, str):
        return create_space(space)
    if isinstance(space, dict):
        return space_from_spec(space)
    raise TypeError(f"space must be a SearchSpace, a registered space name or a spec dict, got {type(space).__name__}")


def create_predictor(name: str, *, space: SearchSpace | str | dict[str, Any], **kwargs: Any) -> Predictor:
    """Create a registered predictor (``create_predictor("gp", space=space, seed=0)``)."""
    return PREDICTORS.create(name, space=_as_space(space), **kwargs)


def _from_header(header: dict[str, Any], arrays: dict[str, np.ndarray], space: SearchSpace | None) -> Predictor:
    saved = header["space"]
    if space is not None and _json_norm(space.spec()) != _json_norm(saved):
        raise SpaceMismatchError(f"predictor was fitted on space {saved.get('name')!r} with spec {saved}; "
                                 f"it cannot serve space {space.name!r} with spec {space.spec()}")
    cls = PREDICTORS.get(header["predictor"])
    model = cls(space=space or space_from_spec(saved), **header["params"])
    model._restore(header["fitted"], arrays)
    return model


def load_predictor(path: str | Path, *, space: SearchSpace | None = None) -> Predictor:
    """Load a predictor saved by :meth:`Predictor.save`. With ``space``, refuse a predictor of another space."""
    header, arrays = read_bundle(path)
    return _from_header(header, arrays, space)
