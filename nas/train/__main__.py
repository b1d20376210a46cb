"""``python -m nas.train [sampler=progressive] [search_space=ofa_mbv3_tiny] [trainer.epochs=3] [resume=true]``."""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from nas.cli import run_command
from nas.commands import apply_runtime
from nas.train.run import run_train

CONF = "pkg://nas.conf"


@hydra.main(version_base=None, config_path=CONF, config_name="train")
def main(cfg: DictConfig) -> None:
    run_command(lambda: apply_runtime(cfg.get("runtime"), threads=cfg.trainer.get("threads")))
    result = run_command(lambda: run_train(cfg))
    last = result.evals[-2:] if result.evals else []
    summary = ", ".join(f"{r['subnet']} {r['top1']:.2f}%" for r in last)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary (rank 0's) rather than one per process
        print(f"trained in {result.seconds:.0f}s -> {result.out_dir}" + (f" ({summary})" if summary else ""))


if __name__ == "__main__":
    main()
