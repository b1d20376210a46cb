"""``python -m nas.profile hw=local_cpu``: measure a hardware profile (latency lookup table) on this machine.

Thin Hydra entry point over :func:`hw_profiles.builder.build_from_config`; it wires in the static builders
(``supernets.static.build_layer`` / ``build_network``), which ``hw_profiles`` may not import itself.
Resumes an interrupted build.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from hw_profiles.builder import BuildResult, build_from_config
from nas.cli import run_command
from supernets.static import build_layer, build_network

CONF_DIR = "pkg://nas.conf"


def run(cfg: DictConfig) -> BuildResult:
    c = OmegaConf.to_container(cfg, resolve=True)
    result = build_from_config(c["hw"], space=c["space"]["name"], space_kwargs=c["space"].get("kwargs"),
                               out=c.get("out"), build_layer=build_layer, build_network=build_network,
                               progress=lambda done, todo: print(f"measured {done}/{todo}", flush=True))
    print(f"profile {result.path}: {result.total} layers, {len(result.measured)} measured now, "
          f"{result.skipped} already present")
    return result


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="profile")
def main(cfg: DictConfig) -> None:
    run_command(lambda: run(cfg))


if __name__ == "__main__":
    main()
