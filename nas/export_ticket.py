"""Export a SuperTickets subnet ("ticket") with its sparsity stored and measured in the export metadata.

A run trained with ``sampler=supertickets`` keeps its pruning masks in ``checkpoint.pt`` and zeros in its saved
weights. :func:`export_ticket` checks that the weights carry the masks, exports ``arch`` through
:func:`nas.export_subnet.export_arch` and adds ``metadata["ticket"]``: the target sparsity, the supernet sparsity of
the masks, and the sparsity measured on the exported module over its tensors that derive from pruned supernet
tensors (found by exporting an indicator copy of the supernet). :func:`magnitude_prune` is the baseline "prune after
search": global magnitude pruning of a static module's weights at a given sparsity.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.arch_input import parse_arch
from nas.checkpoints import load_checkpoint, load_supernet
from nas.export_subnet import export_arch
from nas.train.samplers.supertickets import global_magnitude_masks, mask_sparsity
from search_spaces.errors import BadInputError, CorruptFileError

__all__ = ["export_ticket", "magnitude_prune", "ticket_sparsity"]


def _masks(run_dir: Path) -> tuple[dict[str, torch.Tensor], float]:
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.exists():
        raise BadInputError(f"{run_dir} holds no checkpoint.pt; pass the out_dir of a sampler=supertickets run")
    sampler = load_checkpoint(ckpt, "cpu")["sampler"]
    masks = sampler.get("masks") if isinstance(sampler, dict) else None
    if not masks:
        raise BadInputError(f"{ckpt} has no pruning masks: it is not a sampler=supertickets run, or it stopped "
                            f"before its first prune")
    return {n: m.bool() for n, m in masks.items()}, float(sampler["target_sparsity"])


def _indicator_names(net: nn.Module, masks: dict[str, torch.Tensor], arch: Any) -> set[str]:
    """Names of the exported tensors (>= 2 dims) that derive from masked supernet tensors."""
    probe = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in probe.named_parameters():
            if p.dim() >= 2 and "matrices" not in n:
                p.fill_(1.0 if n in masks else 0.0)
    module = probe.export(arch).module
    return {n for n, t in module.state_dict().items() if t.dim() >= 2 and bool(t.ne(0).any())}


def ticket_sparsity(state: dict[str, torch.Tensor], names: set[str]) -> float:
    """Fraction of exact zeros over the tensors ``names`` of ``state``."""
    zeros = sum(int((state[n] == 0).sum()) for n in names)
    total = sum(int(state[n].numel()) for n in names)
    return 0.0 if total == 0 else zeros / total


def export_ticket(run_dir: str | Path, arch: Any, out: str | Path, *, data: dict[str, Any] | None = None,
                  recalibrate: bool = True, overwrite: bool = False, onnx: bool = True) -> dict[str, Any]:
    """Export ``arch`` of a SuperTickets run with ``metadata["ticket"]``; returns the metadata written."""
    run_dir, out = Path(run_dir), Path(out)
    masks, target = _masks(run_dir)
    net = load_supernet(run_dir)
    params = dict(net.named_parameters())
    for n, m in masks.items():
        if n not in params or params[n].shape != m.shape:
            raise CorruptFileError(f"mask {n!r} of {run_dir / 'checkpoint.pt'} does not match the saved supernet")
        if bool(params[n].detach()[~m].ne(0).any()):
            raise CorruptFileError(f"the saved weights of {run_dir} are not pruned by the checkpoint's masks ({n})")
    arch_value = arch if isinstance(arch, net.space.arch_type()) else parse_arch(net.space, arch, lookup=(run_dir,))
    arch = net.space.to_dict(arch_value)
    names = _indicator_names(net, masks, arch_value)
    state = net.export(arch_value).module.state_dict()  # the tensors export_arch writes (BN aside)
    ticket = {"target_sparsity": target, "supernet_sparsity": mask_sparsity(masks), "pruned_tensors": len(masks),
              "measured_sparsity": ticket_sparsity(state, names), "measured_tensors": len(names)}
    meta = export_arch(run_dir, arch, out, data=data, recalibrate=recalibrate, overwrite=overwrite, onnx=onnx,
                       extra={"ticket": ticket})
    return meta


@torch.no_grad()
def magnitude_prune(module: nn.Module, sparsity: float, *, exclude: tuple[str, ...] = ("classifier",)) -> float:
    """Prune ``module``'s >= 2-D weights (names not containing ``exclude``) globally by magnitude; returns sparsity."""
    weights = {n: p for n, p in module.named_parameters()
               if p.dim() >= 2 and n.endswith("weight") and not any(e in n for e in exclude)}
    masks = global_magnitude_masks(weights, sparsity)
    for n, p in weights.items():
        p.mul_(masks[n].to(p.device, p.dtype))
    return mask_sparsity(masks)
