"""``python -m nas.profile hw=local_cpu``: measure a hardware profile (latency lookup table) on this machine.

Thin Hydra entry point over :func:`hw_profiles.builder.build_from_config`; it wires in the static builders
(``supernets.static.build_layer`` / ``build_network``), which ``hw_profiles`` may not import itself.
Resumes an interrupted build.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from hw_profiles.builder import BuildResult, build_from_config
from nas import conf
from nas.cli import run_command
from nas.resolve import resolve_space
from supernets.static import build_layer, build_network

CONF_DIR = str(conf.CONF_DIR)  # for hydra.initialize_config_dir (tests); the command reads pkg://nas.conf


def run(cfg: DictConfig) -> BuildResult:
    c = OmegaConf.to_container(cfg, resolve=True)
    space = resolve_space(c["space"], key="space.name")  # a registered name or a user's module:factory
    result = build_from_config(c["hw"], space=space,
                               out=c.get("out"), build_layer=build_layer, build_network=build_network,
                               progress=lambda done, todo: print(f"measured {done}/{todo}", flush=True))
    print(f"profile {result.path}: {result.total} layers, {len(result.measured)} measured now, "
          f"{result.skipped} already present")
    return result


@hydra.main(version_base=None, config_path=conf.SEARCH_PATH, config_name="profile")
def main(cfg: DictConfig) -> None:
    run_command(lambda: run(cfg))


if __name__ == "__main__":
    main()
