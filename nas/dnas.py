"""``python -m nas.dnas mode=darts|fbnet|pcdarts|tangle [search_space=...] [+hw=local_cpu]``: differentiable NAS.

Thin hydra entry over :func:`nas.search.dnas_app.dnas_from_config`; prints the found architecture and its
accuracy, and writes the results directory (``nas.export results=<dir> rank=0`` exports it).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nas.cli import run_command
from nas.commands import apply_runtime

CONF = "pkg://nas.conf"


@hydra.main(version_base=None, config_path=CONF, config_name="dnas")
def main(cfg: DictConfig) -> None:
    from nas.search.dnas_app import dnas_from_config, summarise

    run_command(lambda: apply_runtime(cfg.get("runtime")))
    print(run_command(lambda: summarise(dnas_from_config(cfg))))


if __name__ == "__main__":
    main()
