"""One resolution of user-named things for every command: a registered name or a ``module:factory`` spec.

``search_space.name``, ``supernet.name`` (and the search's objective, predictor and searcher entries) accept either
a name from the engine's registry or ``package.module:factory``, imported from ``sys.path`` (a user's directory on
``PYTHONPATH``). A factory's result is checked against the type the key needs. A user's space class and supernet
factory are added to the registries under their ``name``, so a checkpoint of a user supernet is rebuilt from its
spec like any other; a training run records its config next to its weights, and :func:`load_trained_supernet`
imports the user modules named there before loading.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from search_spaces import SPACES, SearchSpace
from search_spaces.errors import BadInputError

__all__ = ["FactoryError", "import_factory", "resolve", "resolve_space", "resolve_supernet", "load_trained_supernet",
           "plain"]

T = TypeVar("T")


class FactoryError(BadInputError):
    """A ``module:factory`` spec that cannot be imported, or whose factory returns the wrong type."""


def plain(node: Any) -> dict[str, Any]:
    """A config mapping (DictConfig or dict, or None) as a plain dict."""
    if node is None:
        return {}
    from omegaconf import DictConfig, OmegaConf

    return dict(OmegaConf.to_container(node, resolve=True)) if isinstance(node, DictConfig) else dict(node)


def is_spec(name: str) -> bool:
    return ":" in name and not name.startswith(("/", "."))


def import_factory(spec: str, *, key: str) -> Callable[..., Any]:
    """``"package.module:attr"`` -> the attribute; the error names the key, the value and what went wrong."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise FactoryError(f"{key}={spec!r}: expected 'package.module:factory'")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise FactoryError(f"{key}={spec!r}: cannot import module {module!r} ({exc}); is its directory on "
                           "PYTHONPATH?") from None
    try:
        factory = getattr(mod, attr)
    except AttributeError:
        public = sorted(n for n in vars(mod) if not n.startswith("_") and callable(getattr(mod, n)))[:12]
        raise FactoryError(f"{key}={spec!r}: module {module!r} has no attribute {attr!r}; it defines "
                           f"{public}") from None
    if not callable(factory):
        raise FactoryError(f"{key}={spec!r}: {attr!r} is not callable")
    return factory


def resolve(name: str, registry: Any, expected: type[T] | tuple[type, ...], *, key: str, **kwargs: Any) -> T:
    """Create ``name`` from ``registry`` or, for ``module:factory``, by calling the factory; check the type."""
    if is_spec(name):
        factory = import_factory(name, key=key)
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as exc:
            raise FactoryError(f"{key}={name!r} cannot be called with {sorted(kwargs)}: {exc}") from None
        except ValueError:  # no signature to inspect (some builtins): let the call itself decide
            pass
        obj = factory(**kwargs)
    elif name in registry:
        obj = registry.create(name, **kwargs)
    else:
        raise FactoryError(f"{key}={name!r}: not a registered {registry.kind} ({', '.join(registry.names())}) "
                           "and not a 'package.module:factory' spec")
    if not isinstance(obj, expected):
        want = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise FactoryError(f"{key}={name!r} returned a {type(obj).__name__}, not a {want}")
    return obj  # type: ignore[return-value]


def resolve_space(node: Mapping[str, Any] | str, *, key: str = "search_space.name") -> SearchSpace:
    """The space a config entry (``{name, kwargs}`` or a bare name) names; a user space is registered by name."""
    name, kwargs = (node, {}) if isinstance(node, str) else (str(node["name"]), plain(node.get("kwargs")))
    space = resolve(name, SPACES, SearchSpace, key=key, **kwargs)
    if is_spec(name) and space.name not in SPACES:
        SPACES.add(space.name, type(space))  # spec -> space again (supernet_from_spec), fields as constructor args
    return space


def resolve_supernet(node: Mapping[str, Any] | str, space: SearchSpace, *, key: str = "supernet.name") -> Any:
    """The supernet a config entry names, built over ``space``; a user factory is registered under its name."""
    from supernets import SUPERNETS, Supernet

    name, kwargs = (node, {}) if isinstance(node, str) else (str(node["name"]), plain(node.get("kwargs")))
    net = resolve(name, SUPERNETS, Supernet, key=key, space=space, **kwargs)
    if is_spec(name) and net.name not in SUPERNETS:
        SUPERNETS.add(net.name, import_factory(name, key=key))
    return net


def _run_config(path: Path) -> Path | None:
    """The ``config.yaml`` a training run wrote next to its weights (or next to / above its checkpoint file)."""
    for d in ([path] if path.is_dir() else []) + [path.parent, path.parent.parent]:
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
    return None


def import_run_plugins(path: str | Path) -> None:
    """Resolve the user space and supernet named in a training run's config (registering them) before loading."""
    cfg_file = _run_config(Path(path))
    if cfg_file is None:
        return
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(cfg_file)
    sp, sn = cfg.get("search_space"), cfg.get("supernet")
    user_space = sp is not None and is_spec(str(sp.get("name", "")))
    user_net = sn is not None and is_spec(str(sn.get("name", "")))
    if user_space or (user_net and sp is not None):  # a user supernet may serve a registered space
        space = resolve_space(sp)
        if user_net:
            resolve_supernet(sn, space)


def load_trained_supernet(path: str | Path) -> Any:
    """:func:`nas.checkpoints.load_supernet` for any supernet, a user's included (see module docstring)."""
    from nas.checkpoints import load_supernet

    import_run_plugins(path)
    return load_supernet(path)
