"""``python -m nas.export``: one architecture of a trained supernet as a stand-alone subnet directory.

    python -m nas.export results=<search dir> rank=0 [out=<dir>] [checkpoint=<supernet>] [data=fashion_mnist]
    python -m nas.export checkpoint=<supernet> arch='{"ks": [...], "e": [...], "d": [...], "r": 32}' data=fashion_mnist
    python -m nas.export checkpoint=<supernet> arch=<arch id a search printed> data=fashion_mnist [results=<dir>]
    ... format=onnx_int8|torch_int8|fake_quant [fallback=fake_quant] [calib_images=N calib_batch=B]  (a quantised
    supernet's policy; see nas.export_quant)

Thin hydra entry over :mod:`nas.export_subnet` (config ``nas/conf/export.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from nas.checks import as_bool
from nas.cli import run_command
from nas.commands import apply_runtime, quote_values
from nas.conf import SEARCH_PATH
from nas.export_subnet import ExportError, export_arch, export_front_point, front_subnet_dir
from nas.search.results import read_results_dir


def run_export(cfg: DictConfig) -> str:
    """The library behind the command: returns the line it prints."""
    data: Any = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None
    recal, overwrite = as_bool(cfg.recalibrate, "recalibrate"), as_bool(cfg.overwrite, "overwrite")
    if cfg.get("arch") is not None:
        if not cfg.get("checkpoint"):
            raise ExportError("arch=... needs checkpoint=<weights dir or training checkpoint.pt> to cut it from")
        out = cfg.out or "subnet"
        lookup = (str(cfg.results),) if cfg.get("results") else ()
        arch = OmegaConf.to_container(cfg.arch) if isinstance(cfg.arch, DictConfig) else str(cfg.arch)
        if as_bool(cfg.get("ticket", False), "ticket"):
            from nas.export_ticket import export_ticket

            meta = export_ticket(str(cfg.checkpoint), arch, str(out), data=data, recalibrate=recal, overwrite=overwrite)
            t = meta["ticket"]
            return (f"exported ticket {meta['arch_id']} to {out}: measured sparsity {t['measured_sparsity']:.3f} "
                    f"(target {t['target_sparsity']:.3f}, supernet {t['supernet_sparsity']:.3f})")
        meta = export_arch(str(cfg.checkpoint), arch, str(out), data=data, recalibrate=recal, lookup=lookup,
                           overwrite=overwrite, **_quant_options(cfg))
        top1 = meta.get("measured_test_top1")
        return (f"exported {meta['arch_id']} to {out}: {meta['macs'] / 1e6:.2f} M MACs, {meta['params']} params"
                + (f", measured test top-1 {top1:.2f}%" if top1 is not None else "") + _quant_line(meta))
    if not cfg.get("results"):
        raise ExportError("nothing to export: give results=<search dir> rank=N, or checkpoint=<supernet> arch=<JSON "
                          "or arch id>")
    front = str(cfg.get("front") or "search")
    saved = OmegaConf.create(read_results_dir(cfg.results, front)[1])
    checkpoint = cfg.get("checkpoint") or saved.get("resolved_supernet")
    if data is None and saved.get("export_data") and not cfg.get("checkpoint"):
        data = OmegaConf.to_container(saved.export_data, resolve=True)
    out = cfg.out or Path(cfg.results) / front_subnet_dir(front, int(cfg.rank))
    return export_front_point(str(cfg.results), rank=int(cfg.rank), out=out, data=data, recalibrate=recal,
                              checkpoint=str(checkpoint) if checkpoint else None, overwrite=overwrite,
                              front=front, **_quant_options(cfg))


def _quant_options(cfg: DictConfig) -> dict[str, Any]:
    return {"fmt": str(cfg.get("format") or "fake_quant"),
            "fallback": None if cfg.get("fallback") in (None, "null", "none") else str(cfg.fallback),
            "calib_images": int(cfg.get("calib_images", 2000)), "calib_batch": int(cfg.get("calib_batch", 200)),
            "int8_kernels": str(cfg.get("int8_kernels") or "auto")}


def _quant_line(meta: dict[str, Any]) -> str:
    exp = (meta.get("quantization") or {}).get("export")
    if not exp:
        return ""
    if exp.get("fallback"):
        return f"; format={exp['requested_format']} fell back to fake_quant: {exp['fallback_reason']}"
    kernels = f" ({exp['kernels']} kernels)" if "kernels" in exp else f" (engine {exp['engine']})"
    return f"; {exp['format']} model {exp['file']}{kernels}: measured test top-1 {exp['measured_test_top1']:.2f}%"


@hydra.main(version_base=None, config_path=SEARCH_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    run_command(lambda: apply_runtime(cfg.get("runtime")))
    print(run_command(lambda: run_export(cfg)))


if __name__ == "__main__":
    quote_values(["arch"])
    main()
