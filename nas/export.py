"""``python -m nas.export results=<search dir> rank=0 [out=...] [supernet=...]`` or ``supernet=... arch='<json>'``.

Thin hydra entry over :mod:`nas.export_subnet`: exports a front point of a search (or any architecture) of a trained
supernet as a stand-alone subnet directory (config JSON, safetensors, metadata, ONNX).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from nas.checks import as_bool
from nas.cli import run_command
from nas.export_subnet import export_arch, export_front_point
from nas.search.results import read_results_dir

CONF = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base=None, config_path=CONF, config_name="export")
def main(cfg: DictConfig) -> None:
    run_command(lambda: _main(cfg))


def _main(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None
    if cfg.get("results"):
        saved = OmegaConf.create(read_results_dir(cfg.results)[1])
        supernet = cfg.get("supernet") or _supernet_of(saved)
        data = data or (OmegaConf.to_container(saved.get("export_data"), resolve=True)
                        if saved.get("export_data") else None)
        out = cfg.out or Path(cfg.results) / f"subnet_rank{cfg.rank}"
        print(export_front_point(cfg.results, rank=int(cfg.rank), out=out, supernet=supernet,  # type: ignore[arg-type]
                                 data=data, overwrite=as_bool(cfg.overwrite, "overwrite")))
    else:
        arch = OmegaConf.to_container(cfg.arch) if isinstance(cfg.arch, DictConfig) else cfg.arch
        meta = export_arch(cfg.supernet, arch, cfg.out, data=data,  # type: ignore[arg-type]
                           overwrite=as_bool(cfg.overwrite, "overwrite"))
        print(json.dumps({k: meta[k] for k in ("arch_id", "macs", "params")}, indent=1))


def _supernet_of(saved: DictConfig) -> str | None:
    path = saved.get("resolved_supernet")
    return str(path) if path else None


if __name__ == "__main__":
    main()
