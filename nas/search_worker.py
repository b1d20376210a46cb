"""``python -m nas.search_worker storage=<URL> checkpoint=<supernet> [study=nas_search] [n_trials=100]``.

One parallel search worker (:func:`nas.search.workers.worker_from_config`): start the same command in as many
processes and on as many machines as you like; they share the Optuna study ``study`` in ``storage`` (a PostgreSQL
URL, or ``journal:///shared/dir/study.log``), evaluate different subnets of the supernet for real, and stop when the
study holds ``n_trials`` evaluated subnets.
"""

from __future__ import annotations

import logging

import hydra
import optuna
from omegaconf import DictConfig

from nas.cli import run_command
from nas.commands import apply_runtime
from nas.search.workers import worker_from_config

CONF = "pkg://nas.conf"


@hydra.main(version_base=None, config_path=CONF, config_name="search_worker")
def main(cfg: DictConfig) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("nas").setLevel(logging.INFO)
    run_command(lambda: apply_runtime(cfg.get("runtime"), threads=cfg.get("threads")))
    res = run_command(lambda: worker_from_config(cfg))
    print(f"worker {res.worker}: evaluated {len(res.evaluated)} subnets, {len(res.duplicates)} duplicate proposals "
          f"skipped, {len(res.retried)} retries of failed trials; stopped: {res.stop_reason} ({res.seconds:.0f}s)")


if __name__ == "__main__":
    main()
