"""``python -m nas.profile hw=local_cpu``: measure a hardware profile (latency lookup table) on this machine.

Thin Hydra entry point over :func:`hw_profiles.builder.build_from_config`; it wires in the static builders
(``supernets.static.build_layer`` / ``build_network``), which ``hw_profiles`` may not import itself.
Resumes an interrupted build.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hw_profiles.builder import BuildResult, build_from_config
from hw_profiles.validation import validate_profile
from nas import conf
from nas.checks import as_bool, as_int
from nas.cli import run_command
from nas.resolve import resolve_space
from supernets.static import build_layer, build_network

CONF_DIR = str(conf.CONF_DIR)  # for hydra.initialize_config_dir (tests); the command reads pkg://nas.conf


def run(cfg: DictConfig) -> BuildResult:
    c = OmegaConf.to_container(cfg, resolve=True)
    space = resolve_space(c["space"], key="space.name")  # a registered name or a user's module:factory
    passes = validate_passes(c) if c.get("validate") else None  # refused before the build, not after it
    recalibrate = as_bool(c.get("recalibrate", False), "recalibrate")
    result = build_from_config(c["hw"], space=space,
                               out=c.get("out"), build_layer=build_layer, build_network=build_network,
                               progress=lambda done, todo: print(f"measured {done}/{todo}", flush=True),
                               recalibrate=recalibrate)
    print(f"profile {result.path}: {result.total} layers, {len(result.measured)} measured now, "
          f"{result.skipped} already present")
    if result.level_change is not None:
        print(f"recalibrated: the calibration networks now take {result.level_change:.3f}x their time at the "
              f"previous calibration ({100 * (result.level_change - 1):+.1f} %); prices follow the machine's speed now")
    if passes is not None:
        report = validate_built(c, result.path, passes)
        cal, unc = report["calibrated"], report["uncalibrated_stats"]
        print(f"validation in a separate process, {report['nets']} random subnets, "
              f"{report['conditions'].get('passes', 1)} pass(es) ({report['clock']} clock): "
              f"within10={cal['within10']:.3f} within5={cal['within5']:.3f} rmspe={cal['rmspe']:.4f} "
              f"bias={cal['bias']:+.3f}; uncalibrated sums within10={unc.get('within10', float('nan')):.3f} "
              f"rmspe={unc.get('rmspe', float('nan')):.4f}; run-to-run spread {100 * report['spread']:.1f}%"
              + ("" if report.get("pass_spread") is None else
                 f"; the same subnets from pass to pass {100 * report['pass_spread']:.1f}%"))
        speed, at = report.get("machine_speed"), report.get("calibrated_at_speed")
        if speed is not None:
            print(f"machine speed: the calibration networks took {speed:.3f}x their time at calibration; with "
                  f"the predictions scaled by that, within10={at['within10']:.3f} rmspe={at['rmspe']:.4f} "
                  f"(the table's own error; beyond +-5 % the machine changed: recalibrate=true re-times them)")
    return result


def validate_built(c: dict, path: Path, passes: int) -> dict:
    """``validate=N``: time N random subnets in a separate process against the profile just built, each in
    ``passes`` passes (:func:`validate_passes`)."""
    kwargs = dict(c["space"].get("kwargs") or {})
    resolutions = (c["hw"].get("build") or {}).get("resolutions")
    if resolutions is not None:
        kwargs["resolutions"] = tuple(resolutions)
    return validate_profile(path, c["space"]["name"], kwargs, nets=int(c["validate"]),
                            seed=int(c.get("validate_seed", 0)), passes=passes)


def validate_passes(c: dict) -> int:
    """``validate_passes``, null meaning as many passes as the table's entries had (``hw.build.passes``)."""
    passes = c.get("validate_passes")
    if passes is None:
        return as_int((c["hw"].get("build") or {}).get("passes", 1), "hw.build.passes", minimum=1)
    return as_int(passes, "validate_passes (null: as many as hw.build.passes)", minimum=1)


@hydra.main(version_base=None, config_path=conf.SEARCH_PATH, config_name="profile")
def main(cfg: DictConfig) -> None:
    run_command(lambda: run(cfg))


if __name__ == "__main__":
    main()
