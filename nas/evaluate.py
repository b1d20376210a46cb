"""``python -m nas.evaluate checkpoint=<run dir> [n_random=300] [seed=0] [out=measurements.csv]``.

Thin hydra entry over :func:`nas.evaluation.run_evaluate`: top-1/loss of seeded random (or given) subnets after
BN recalibration, with MACs and params, written as a measurements CSV.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nas.cli import run_command
from nas.commands import apply_runtime
from nas.evaluation import (
    MEASUREMENT_FIELDS,
    EvalSet,
    EvaluateResult,
    evaluate_subnets,
    read_measurements,
    run_evaluate,
    sample_archs,
    write_measurements,
)

__all__ = ["MEASUREMENT_FIELDS", "EvalSet", "EvaluateResult", "evaluate_subnets", "read_measurements",
           "run_evaluate", "sample_archs", "write_measurements", "main"]

CONF = "pkg://nas.conf"


@hydra.main(version_base=None, config_path=CONF, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_command(lambda: apply_runtime(cfg.get("runtime"), threads=cfg.get("threads")))
    res = run_command(lambda: run_evaluate(cfg))
    best = max(res.rows, key=lambda r: r["top1"])
    print(f"evaluated {len(res.rows)} subnets in {res.seconds:.1f}s -> {res.path}; best top1 {best['top1']:.2f}% "
          f"({best['arch_id']})")


if __name__ == "__main__":
    main()
