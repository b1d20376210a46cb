"""Refit the shipped ``snapdragon855`` latency model from OFA's Note10 tables (see :mod:`hw_profiles.fit_snapdragon`).

    python tools/fit_snapdragon855.py --tables <dir with {160..224}_lookup_table.yaml> [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hw_profiles.domain import Domain
from hw_profiles.fit_snapdragon import _rows, fit_snapdragon855, read_resolution_tables, sha1_git
from hw_profiles.latency import save_calibrated
from hw_profiles.profile import ProfileMeta
from hw_profiles.registry import SNAPDRAGON855_MODEL


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", required=True, help="directory holding OFA's {r}_lookup_table.yaml (note10)")
    parser.add_argument("--out", default=str(SNAPDRAGON855_MODEL))
    args = parser.parse_args(argv)
    tables = read_resolution_tables(args.tables)
    model, validation = fit_snapdragon855(tables)
    files = {f"{r}_lookup_table.yaml": sha1_git(Path(args.tables) / f"{r}_lookup_table.yaml") for r in tables}
    meta = ProfileMeta(
        name="snapdragon855", device="Samsung Galaxy Note10", soc="Snapdragon 855 (variant undocumented)",
        runtime="undocumented (OFA used TF-Lite for mobile deployment)", runtime_version=None, threads=None,
        batch=1, units="ms",
        method=("calibrated non-negative linear model over physical layer features, fitted by relative-error NNLS on "
                "the per-layer means of OFA's Note10 latency tables (each mean over 38-500 timed runs on the phone)"),
        space="ofa_mbv3_w12 (stem 24, stages 32/48/96/136/192, head 1152/1536) at r in "
              + ",".join(str(r) for r in sorted(tables)),
        created=datetime.date.today().isoformat(),
        notes=("coefficients only; OFA's tables are not redistributed (no licence). Pass tables=<dir> to use them. "
               "The feature tiles (GEMM rows 8, depthwise channels 16) were chosen on these same tables."),
        provenance={"source": "github.com/han-cai/files ofa/note10/{r}_lookup_table.yaml",
                    "source_commit": "a7c9bcd525e17404968bc55aa43772bf7e51909e", "git_blobs": files,
                    "fitted_by": "python tools/fit_snapdragon855.py", "n_entries": int(model.info["n_fit"])},
    )
    specs = _rows(tables, sorted(tables))[0]
    domain = Domain.of(specs, batch=1, source="fitted on OFA's Note10 tables: OFA-MBv3 w1.2 at "
                       f"{min(tables)}-{max(tables)} px, batch 1, fp32")
    save_calibrated(args.out, meta, model, validation, domain)
    for r, res in validation["per_resolution"].items():
        print(f"held-out r={r}: blocks within10={res['block_within10']:.3f} rmspe={res['block_rmspe']:.4f} "
              f"all within10={res['all_within10']:.3f}")
    print(f"coef={dict(zip(model.to_dict()['feature_names'], np.round(model.coef, 5)))} -> {args.out}")


if __name__ == "__main__":
    main()
