"""``init_from=<weights dir or checkpoint>``: start a training run from another run's weights.

A float supernet initialises a quantised supernet over the same base space (EQ-Net starts from a trained float
model): its weights and BN statistics are loaded into the wrapped float supernet, the quantisers stay
uninitialised (the eqnet sampler calibrates them on the first batch). A supernet of the same spec is loaded as is.
Anything else is refused with both specs named.
"""

from __future__ import annotations

from pathlib import Path

from search_spaces.errors import BadInputError
from supernets import Supernet

__all__ = ["init_from"]


def init_from(model: Supernet, path: str | Path) -> Supernet:
    """Load the weights at ``path`` into ``model`` (in place) and return it."""
    from nas.checkpoints import load_supernet
    from supernets.quant import QuantSupernet

    if not Path(path).exists():
        raise BadInputError(f"init_from={str(path)!r} does not exist; give a weights directory (supernet.json + "
                            "supernet.safetensors) or a training checkpoint.pt")
    source = load_supernet(path)
    if isinstance(model, QuantSupernet) and not isinstance(source, QuantSupernet):
        base = model.space.base  # type: ignore[attr-defined]
        if source.space.spec() != base.spec() or source.name != model.base_name:
            raise BadInputError(
                f"init_from={str(path)!r} holds a {source.name!r} supernet of space {source.space.name!r}; the "
                f"quantised supernet wraps a {model.base_name!r} supernet of space {base.name!r} (specs must match)")
        with model.unwrapped() as inner:
            _load(inner, source, path)
        return model
    if source.full_spec() != model.full_spec():
        raise BadInputError(f"init_from={str(path)!r} holds a {source.name!r} supernet of space "
                            f"{source.space.name!r}, not this run's {model.name!r} of {model.space.name!r}")
    _load(model, source, path)
    return model


def _load(target: Supernet, source: Supernet, path: str | Path) -> None:
    try:
        target.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise BadInputError(f"init_from={str(path)!r}: weights do not fit this supernet ({str(exc)[:300]})") from None
