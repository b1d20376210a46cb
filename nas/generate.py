"""Search-free deployment of a ShiftNAS run: ``python -m nas.generate run=<train out_dir> macs=<target>``.

A run trained with ``sampler=shiftnas sampler.kwargs.generator=true`` holds its bin-conditioned architecture generator
in ``checkpoint.pt``. :func:`generate_arch` picks the complexity bin that holds the target cost (MACs: the bins are
over the sampler's cost, MACs by default) and returns the generator's most probable architecture for it, with its
measured MACs and whether they land in the bin. No search, no retraining (ShiftNAS, ICCV 2023, section 3.3).
Export the printed ``arch`` with ``python -m nas.export``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nas.checkpoints import load_checkpoint
from nas.cli import run_command
from nas.train.samplers.shiftnas_generator import ArchGenerator
from search_spaces import create_space
from search_spaces.errors import BadInputError

__all__ = ["generate_arch", "main"]


def generate_arch(run_dir: str | Path, *, macs: float) -> dict[str, Any]:
    """The generator's architecture for the bin holding ``macs``: arch dict, id, MACs, bin and whether in bin."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.exists():
        raise BadInputError(f"{run_dir} holds no checkpoint.pt; pass the out_dir of a sampler=shiftnas run")
    state = load_checkpoint(ckpt, "cpu")
    sampler = state["sampler"]
    gen_state = sampler.get("generator") if isinstance(sampler, dict) else None
    if not gen_state:
        raise BadInputError(f"{ckpt} holds no architecture generator; train with sampler=shiftnas "
                            f"sampler.kwargs.generator=true")
    spec = dict(state["spec"]["space"])
    space = create_space(spec.pop("name"), **spec)
    edges = np.asarray(gen_state["edges"], dtype=np.float64)
    if not edges[0] <= macs <= edges[-1]:
        raise BadInputError(f"target macs={macs:g} lies outside the generator's range [{edges[0]:g}, {edges[-1]:g}]")
    k = int(np.clip(np.searchsorted(edges, macs, side="right") - 1, 0, len(edges) - 2))
    net = ArchGenerator([len(g.choices) for g in space.genes()], len(edges) - 1, hidden=int(gen_state["hidden"]))
    net.load_state_dict(gen_state["net"])
    arch = space.decode(np.asarray(net.best(k)))
    cost = float(space.macs(arch))
    return {"arch": space.to_dict(arch), "arch_id": space.arch_id(arch), "macs": cost, "bin": k,
            "bin_range": [float(edges[k]), float(edges[k + 1])], "in_bin": bool(edges[k] <= cost <= edges[k + 1])}


def _parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in ("run", "macs"):
            raise BadInputError(f"argument {a!r} not understood; usage: python -m nas.generate run=<dir> macs=<n>")
        args[key] = value
    if set(args) != {"run", "macs"}:
        raise BadInputError("usage: python -m nas.generate run=<train out_dir> macs=<target MACs>")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        macs = float(args["macs"])
    except ValueError:
        raise BadInputError(f"macs must be a number, got {args['macs']!r}") from None
    return generate_arch(args["run"], macs=macs)


if __name__ == "__main__":
    print(json.dumps(run_command(main), indent=1))
