"""``python tests/distributed/train_f64.py <overrides>``: the ``python -m nas.train`` entry point in float64 (tests)."""

from __future__ import annotations

import runpy

from tests.distributed.helpers import float64_training

if __name__ == "__main__":
    with float64_training():
        runpy.run_module("nas.train", run_name="__main__", alter_sys=True)
