"""The ``python -m nas.dnas`` application: config (``conf/dnas.yaml``) -> space, supernet, data, latency -> search.

The space's input geometry (``in_chans``, ``n_classes``, ``resolution`` where the space has such fields) follows the
data module, so ``search_space=nb201`` runs on Fashion-MNIST; its other settings (NB201's C and N) are the user's.
The supernet is the one named by ``supernet=...``, else the registered supernet that accepts the space and has a
mixture form. Space and supernet are registered names or a user's ``module:factory`` (:mod:`nas.resolve`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from nas.data import create_data
from nas.resolve import resolve_space, resolve_supernet
from nas.search.dnas import DnasResult, DnasSettings, run_dnas
from nas.search.dnas_latency import expected_latency
from search_spaces import SearchSpace
from supernets import SUPERNETS, Supernet, create_supernet
from supernets.mixture import MixtureError

__all__ = ["dnas_from_config", "summarise", "mixture_supernet"]

log = logging.getLogger(__name__)
_SETTINGS = [f.name for f in dataclasses.fields(DnasSettings)]


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _fit_to_data(space: SearchSpace, data: Any) -> SearchSpace:
    fields = {f.name for f in dataclasses.fields(space)} if dataclasses.is_dataclass(space) else set()
    want = {"in_chans": data.in_chans, "n_classes": data.n_classes, "resolution": data.image_size}
    change = {k: v for k, v in want.items() if k in fields and getattr(space, k) != v}
    if change:
        log.info("space %s: geometry follows the data: %s", space.name, change)
        space = dataclasses.replace(space, **change)
    return space


def mixture_supernet(space: SearchSpace, mode: str, spec: dict[str, Any] | None = None) -> Supernet:
    """The named supernet, or the first registered one that accepts ``space`` and can mix in ``mode``."""
    if spec:
        net = resolve_supernet(spec, space)
        net.mixture_choices(mode)
        return net
    tried = []
    for name in SUPERNETS.names():
        declared = getattr(SUPERNETS.get(name), "mixture_modes", None)  # a supernet class says what it can mix
        if declared is not None and mode not in declared:
            continue
        try:
            net = create_supernet(name, space)
        except (TypeError, ValueError):
            continue
        tried.append(name)
        if mode in net.mixture_modes:
            return net
    raise MixtureError(f"no supernet can compute a {mode!r} mixture on space {space.name!r} "
                       f"({type(space).__name__}); supernets accepting the space: {tried or 'none'}; differentiable "
                       "modes exist for the nb201 (darts, fbnet, pcdarts, tangle) and ofa_mbv3 (darts, fbnet, tangle) "
                       "supernets")


def dnas_from_config(cfg: DictConfig) -> DnasResult:
    settings = DnasSettings.for_mode(str(cfg.mode), **{k: _plain(cfg.get(k)) for k in _SETTINGS
                                                      if k != "mode" and k in cfg})
    data_cfg = _plain(cfg.data)
    data = create_data(data_cfg["name"], **dict(data_cfg.get("kwargs") or {}))
    space = resolve_space(cfg.search_space)
    space = _fit_to_data(space, data)
    net = mixture_supernet(space, str(cfg.mode), _plain(cfg.get("supernet")))
    resolution = cfg.get("resolution") or getattr(space, "resolution", None) or data.image_size
    resolutions = getattr(space, "resolutions", None)
    if resolutions is not None and int(resolution) not in resolutions:
        raise MixtureError(f"resolution {resolution} is not one of space {space.name!r}'s {list(resolutions)}; "
                           "set resolution=...")
    latency = None
    if cfg.get("hw"):
        latency = expected_latency(space, str(cfg.hw.name), resolution=int(resolution),
                                   **dict(_plain(cfg.hw.get("kwargs")) or {}))
    device = str(cfg.get("device", "auto"))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    config = _plain(cfg)
    config["search_space"] = {"name": space.name, "kwargs": {}, "spec": space.spec()}

    def progress(row: dict[str, Any]) -> None:
        log.info("epoch %d: entropy %.3f, arch %s", row["epoch"], row["entropy"], row["arch_id"])

    return run_dnas(net, data, settings, str(cfg.out_dir), latency=latency, resolution=int(resolution),
                    resume=bool(cfg.resume), device=device, config=config, progress=progress)


def summarise(result: DnasResult) -> str:
    h = result.history[-1] if result.history else {}
    start = result.history[0].get("entropy") if result.history else None
    flat = ""
    if start and h.get("entropy") is not None and h["entropy"] >= 0.97 * start:
        flat = (f"\nnote: the logits have barely moved from uniform (mean entropy {h['entropy']:.3f}, "
                f"{start:.3f} at the start), so this cell reflects early gradients: raise epochs (or a_lr)")
    return (f"found {h.get('arch_id')} after {len(result.history)} epochs (entropy {h.get('entropy', 0):.3f}); "
            f"val top-1 {result.top1:.2f}% with the weights it inherits from the mixture supernet (BN recalibrated; "
            f"weights trained as a mixture serve a single cell poorly, so DARTS-style searches retrain the found "
            f"cell alone before use){flat}\nresults: {result.out_dir} (front_ranked.json, history.json, supernet/); "
            f"export: python -m nas.export results={result.out_dir} rank=0")
