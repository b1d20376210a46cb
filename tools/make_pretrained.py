"""Refit the shipped OFA-MBv3 ImageNet accuracy predictor (:func:`predictors.make_pretrained.fit_ofa_mbv3_imagenet`).

    python tools/make_pretrained.py --csv <DyNAS-T style CSV: Sub-network, Top-1 Acc (%) columns>
"""

from __future__ import annotations

import argparse

from predictors.make_pretrained import fit_ofa_mbv3_imagenet
from predictors.pretrained import PRETRAINED_DIR


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Refit the shipped OFA-MBv3 ImageNet accuracy predictor")
    ap.add_argument("--csv", required=True, help="DyNAS-T style CSV (Sub-network, Top-1 Acc (%%) columns)")
    ap.add_argument("--out", default=str(PRETRAINED_DIR / "ofa_mbv3_imagenet"))
    ap.add_argument("--predictor", default="gp")
    args = ap.parse_args(argv)
    print(fit_ofa_mbv3_imagenet(args.csv, out=args.out, predictor=args.predictor))


if __name__ == "__main__":
    main()
