"""SortedNet's search-free pick (Valipour et al., arXiv 2309.00255): the largest, or the most accurate, sub-model of
a trained supernet's sorted chain under a cost budget. Library of ``python -m nas.select``.

The chain runs from the smallest to the largest nested grid point of the space (:mod:`search_spaces.sorted`);
its costs are MACs, params or a hardware profile's latency. With ``by="accuracy"`` every chain member is
measured (BN-recalibrated held-out top-1) and the best one within the budget is taken.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.resolve import load_trained_supernet, plain
from search_spaces.errors import BadInputError
from search_spaces.sorted import SortedChain, sorted_grid

__all__ = ["SelectError", "Picked", "select_from_config"]


class SelectError(BadInputError):
    """The budget, cost or grid of a search-free pick cannot be used."""


@dataclass
class Picked:
    arch: Any
    arch_id: str
    cost: float
    metric: str
    accuracy: float | None
    chain_length: int
    path: Path | None


def _cost(cost: str, space: Any) -> Any:
    if cost in ("macs", "params"):
        return cost
    if cost.startswith("hw:"):
        from hw_profiles import HW_PROFILES, create_hw_profile

        name = cost[3:]
        if name not in HW_PROFILES:
            raise SelectError(f"cost={cost!r}: unknown hardware profile {name!r}; available: {HW_PROFILES.names()}")
        model = create_hw_profile(name)
        return lambda sp, archs: model(sp, archs)
    raise SelectError(f"cost={cost!r}; allowed: macs, params, hw:<profile> (e.g. hw:snapdragon855)")


def _accuracies(net: Any, archs: list[Any], cfg: Any) -> list[float]:
    from nas.data import create_data
    from nas.evaluation import EvalSet, evaluate_subnets

    if not cfg.get("data"):
        raise SelectError("by=accuracy measures every chain member: give data=<the data the supernet was trained "
                          "on>, e.g. data=fashion_mnist")
    dm = create_data(str(cfg.data.name), **plain(cfg.data.get("kwargs")))
    evalset = EvalSet(dm, split=str(cfg.split), n_images=cfg.get("n_images"), calib_images=int(cfg.calib_images),
                      calib_batch=int(cfg.calib_batch), seed=int(cfg.seed))
    return [r["top1"] for r in evaluate_subnets(net, archs, evalset)]


def select_from_config(cfg: Any) -> Picked:
    """Pick a sub-model as configured (``nas/conf/select.yaml``); writes ``out`` (JSON) when given."""
    if cfg.get("budget") is None:
        raise SelectError("budget=<largest allowed cost> is required (in the units of cost: MACs, params or ms)")
    if str(cfg.by) not in ("size", "accuracy"):
        raise SelectError(f"by={cfg.by!r}; allowed: size (the largest that fits), accuracy (the best measured)")
    net = load_trained_supernet(str(cfg.checkpoint)).eval()
    space = net.space
    try:
        grid = sorted_grid(space, **plain(cfg.get("grid")))
        archs = [grid.arch(i) for i in grid.chain(cfg.get("chain_order"))]
    except (KeyError, ValueError, IndexError) as exc:
        raise SelectError(f"no sorted grid for space {space.name!r} with grid={plain(cfg.get('grid'))}: "
                          f"{exc}") from None
    acc = _accuracies(net, archs, cfg) if cfg.by == "accuracy" else None
    chain = SortedChain.measure(space, archs, _cost(str(cfg.cost), space), accuracy=acc)
    try:
        sel = chain.select(float(cfg.budget), by=str(cfg.by))
    except ValueError as exc:
        raise SelectError(f"budget={cfg.budget}: {exc}") from None
    path = Path(str(cfg.out)) if cfg.get("out") else None
    picked = Picked(sel.arch, space.arch_id(sel.arch), sel.cost, chain.metric, sel.accuracy, len(archs), path)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"arch_id": picked.arch_id, "arch": space.to_dict(sel.arch), "cost": sel.cost,
                                    "metric": chain.metric, "budget": float(cfg.budget), "by": str(cfg.by),
                                    "accuracy": sel.accuracy, "checkpoint": str(cfg.checkpoint),
                                    "chain": [space.arch_id(a) for a in archs],
                                    "chain_costs": chain.costs.tolist()}, indent=1))
    return picked
