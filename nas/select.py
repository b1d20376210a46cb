"""``python -m nas.select checkpoint=<supernet> budget=<cost> [cost=macs|params|hw:<profile>] [by=size|accuracy]``.

SortedNet's search-free pick: the largest (or most accurate) sub-model of the sorted chain within the budget.
Thin hydra entry over :func:`nas.selection.select_from_config` (config ``nas/conf/select.yaml``); prints the pick
and the ``nas.export`` command that exports it.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from nas.cli import run_command
from nas.commands import apply_runtime
from nas.conf import SEARCH_PATH
from nas.selection import Picked, select_from_config


def summary(p: Picked, cfg: DictConfig) -> str:
    acc = f", measured top-1 {p.accuracy:.2f}%" if p.accuracy is not None else ""
    arch = json.dumps(p.arch.to_dict() if hasattr(p.arch, "to_dict") else p.arch)
    return (f"picked {p.arch_id} ({p.metric} {p.cost:g} <= {cfg.budget}{acc}) from a sorted chain of "
            f"{p.chain_length} sub-models" + (f" -> {p.path}" if p.path else "") +
            f"\nexport: python -m nas.export checkpoint={cfg.checkpoint} arch='{arch}' "
            f"data={cfg.data.name if cfg.get('data') else '<the data it was trained on>'} out=subnet")


@hydra.main(version_base=None, config_path=SEARCH_PATH, config_name="select")
def main(cfg: DictConfig) -> None:
    run_command(lambda: apply_runtime(cfg.get("runtime")))
    print(summary(run_command(lambda: select_from_config(cfg)), cfg))


if __name__ == "__main__":
    main()
