"""``python -m nas.search [+hw=snapdragon855] [searcher=...] [experiment=...]``: thin hydra entry over
:func:`nas.search.app.search_from_config`. Prints the Pareto front and writes the results directory."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from nas.cli import run_command
from nas.commands import apply_runtime
from nas.search.app import search_from_config, summarise

CONF = "pkg://nas.conf"


@hydra.main(version_base=None, config_path=CONF, config_name="search")
def main(cfg: DictConfig) -> None:
    logging.getLogger("nas").setLevel(logging.INFO)
    run_command(lambda: apply_runtime(cfg.get("runtime")))
    print(summarise(run_command(lambda: search_from_config(cfg))))


if __name__ == "__main__":
    main()
