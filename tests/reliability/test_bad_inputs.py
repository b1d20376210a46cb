"""Table-driven bad input: for each config key a user sets on the command line, one bad value, the exact message
and the exit code (2 bad input, 3 corrupt or mismatched file), and never a traceback.

Each row runs the command's real ``main()`` (hydra included) in this process, which is what ``python -m`` runs; a
few rows are also run as real subprocesses (``test_subprocess_prints_one_line``) to pin the process exit code.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from nas.checkpoints import save_weights
from nas.conf import CONF_DIR
from supernets import create_supernet
from supernets.base import SUPERNETS
from tests.reliability.conftest import REPO, run_cli

T = "{tmp}"
SPACES = ("nb201, nb201_tiny, ofa_mbv3, ofa_mbv3_fmnist, ofa_mbv3_tiny, ofa_mbv3_w12, quant, quant_nb201, "
          "quant_nb201_tiny, quant_ofa_mbv3, quant_ofa_mbv3_fmnist, quant_ofa_mbv3_tiny, quant_ofa_mbv3_w12, "
          "vit_small, vit_tiny")
TRAIN = ["search_space=ofa_mbv3_tiny", f"out_dir={T}/t0"]
EV = [f"checkpoint={T}/run", "n_random=1"]
RUN = ["search_space=ofa_mbv3_tiny", "data.kwargs.train_limit=64", "data.kwargs.val_size=64", "trainer.batch_size=16",
       "trainer.epochs=1", "trainer.max_steps_per_epoch=1", "trainer.eval_every=0", "trainer.progress=false",
       "trainer.tensorboard=false", f"out_dir={T}/run"]
WORKER = [f"storage=journal://{T}/j.log", f"checkpoint={T}/run"]

# (command, overrides, exit code, exact message after "error: ")
CASES = [
    # nas.search
    ("nas.search", ["budget=abc"], 2, "budget must be an integer >= 1, got 'abc'"),
    ("nas.search", ["budget=0"], 2, "budget must be an integer >= 1, got 0"),
    ("nas.search", ["seed=-1"], 2, "seed must be an integer >= 0, got -1"),
    ("nas.search", ["export=-1"], 2, "export must be an integer >= 0, got -1"),
    ("nas.search", ["constraints='latency_ms<=0.2'"], 2,
     "constraints must be a list, got the string 'latency_ms<=0.2'; write constraints=\"['latency_ms<=0.2']\" "
     "(e.g. constraints=\"['latency_ms<=25']\")"),
    ("nas.search", ["constraints=['latency_ms<0.2']", "budget=5", f"out_dir={T}/s"], 2,
     "constraint 'latency_ms<0.2' must look like 'name<=value' or 'name>=value'"),
    ("nas.search", ["constraints=['energy<=3']", "budget=5", f"out_dir={T}/s"], 2,
     "constraint on 'energy', but this search provides ['macs_M', 'top1'] and the registered objectives are "
     "['avg_bits', 'bitops', 'hw', 'macs', 'model_size', 'params', 'predictor', 'supernet_accuracy', 'table']; add a "
     "hardware profile (+hw=...) for latency constraints"),
    ("nas.search", ["resume=maybe"], 2, "resume must be true or false, got 'maybe'"),
    ("nas.search", ["progress=3"], 2, "progress must be true or false, got 3"),
    ("nas.search", ["runtime.retain_memory=yes"], 2, "runtime.retain_memory must be true or false, got 'yes'"),
    ("nas.search", ["searcher.name=nope"], 2,
     "searcher.name='nope'; allowed: bayesian_linear, eqnet_ga, evolution, optuna_nsga2, optuna_tpe, pymoo_ga, "
     "pymoo_nsga2, pymoo_nsga3, pymoo_unsga3, random, regularized_evolution, linas or 'package.module:factory'"),
    ("nas.search", ["+searcher.kwargs.bogus=1", "budget=5", f"out_dir={T}/s"], 2,
     "searcher 'pymoo_nsga2': PymooSearcher.__init__() got an unexpected keyword argument 'bogus'"),
    ("nas.search", ["searcher.kwargs.pop_size=0", "budget=5", f"out_dir={T}/s"], 2, "pop_size must be >= 2, got 0"),
    ("nas.search", ["experiment.name=nope"], 2,
     "unknown experiment 'nope' Available: custom, eqnet_fmnist, fmnist_default, ofa_imagenet"),
    ("nas.search", ["+hw=local_cpu", "hw.name=nope"], 2,
     "unknown hardware profile 'nope'; available: ['bitops', 'flops', 'local_cpu', 'local_cpu_int8', 'lut', 'macs', "
     "'params', 'size', 'snapdragon855']"),
    ("nas.search", ["+hw=local_cpu", f"hw.kwargs.path={T}/tiny_profile.json", "budget=5", f"out_dir={T}/s"], 3,
     "hardware profile 'local_cpu' was built for space 'ofa_mbv3_tiny'; it measured 6 of the 226 layer signatures "
     "of space 'ofa_mbv3_fmnist', so the rest would be extrapolated. Build a profile for this space: python -m "
     "nas.profile hw=local_cpu space.name=ofa_mbv3_fmnist out=<new file>"),
    ("nas.search", [f"out_dir={T}/afile", "budget=5"], 2, f"out_dir='{T}/afile' is a file; give a directory for "
     "the results"),
    ("nas.search", ["budget=3", f"out_dir={T}/done"], 2,
     f"budget=3 is smaller than the 8 architectures already evaluated in {T}/done; rerunning would drop 5 of them. "
     "Rerun with budget>=8 to keep them (a larger budget continues the search), or start over with a new out_dir"),
    # nas.train
    ("nas.train", [*TRAIN, "trainer.epochs=0"], 2, "trainer.epochs must be an integer >= 1, got 0"),
    ("nas.train", [*TRAIN, "trainer.batch_size=abc"], 2, "trainer.batch_size must be an integer >= 1, got 'abc'"),
    ("nas.train", [*TRAIN, "trainer.lr=-1"], 2, "trainer.lr must be a number > 0, got -1.0"),
    ("nas.train", [*TRAIN, "trainer.weight_decay=x"], 2, "trainer.weight_decay must be a number >= 0.0, got 'x'"),
    ("nas.train", [*TRAIN, "trainer.amp=maybe"], 2, "trainer.amp must be true or false, got 'maybe'"),
    ("nas.train", [*TRAIN, "trainer.dropout=1.5"], 2, "trainer.dropout must be null or a number in [0, 1), got 1.5"),
    ("nas.train", [*TRAIN, "trainer.device=gpu9"], 2, "device='gpu9' is not a device; use auto, cpu, cuda or "
     "cuda:<index>"),
    ("nas.train", [*TRAIN, "trainer.optimizer=nope", "trainer.max_steps_per_epoch=1"], 2,
     "trainer.optimizer='nope' is not a timm optimizer (Optimizer nope not found in registry); e.g. sgd, adamw, "
     "rmsproptf, lamb"),
    ("nas.train", [*TRAIN, "trainer.schedule=nope", "trainer.max_steps_per_epoch=1"], 2,
     "unknown lr schedule 'nope'; did you mean 'cosine'? Available: cosine, exp_const"),
    ("nas.train", [*TRAIN, "sampler.name=nope"], 2,
     "unknown sampler 'nope' Available: deps, eqnet, fixed, gmnas, pada, progressive, sandwich, shiftnas, sortednet, "
     "supertickets, uniform"),
    ("nas.train", [*TRAIN, "sampler.kwargs.n_random=-1"], 2, "n_random must be >= 0, got -1"),
    ("nas.train", ["search_space.name=nope", f"out_dir={T}/t0"], 2,
     f"search_space.name='nope': not a registered search space ({SPACES}) and not a 'package.module:factory' spec"),
    ("nas.train", [*TRAIN, "supernet.name=nope"], 2,
     "supernet.name='nope': not a registered supernet (fewshot, nb201, ofa_mbv3, quant, vit) and not a "
     "'package.module:factory' spec"),
    ("nas.train", ["search_space=quant_nb201_tiny", "supernet=quant", "sampler=eqnet",
                   "supernet.kwargs.quantizer=double_round", f"out_dir={T}/t0"], 2,
     "unknown weight quantizer 'double_round'; did you mean 'double_rounding'? Available: double_rounding, eqnet"),
    ("nas.train", [*TRAIN, "resume=maybe"], 2, "resume must be true or false, got 'maybe'"),
    ("nas.train", [*TRAIN, "data.kwargs.root=/nonexistent"], 2, "Fashion-MNIST root /nonexistent is not a directory"),
    ("nas.train", [*TRAIN, "data.kwargs.train_limit=abc"], 2,
     "data.kwargs.train_limit must be an integer >= 1, got 'abc'"),
    ("nas.train", [*TRAIN, "data=image_folder", f"data.kwargs.root={T}/none"], 2,
     f"image folder {T}/none does not exist or is not a directory"),
    ("nas.train", [*TRAIN, "data=image_folder", f"data.kwargs.root={T}/images", "+search_space.kwargs.n_classes=2",
                   "+search_space.kwargs.in_chans=3", "trainer.progress=false",
                   "trainer.batch_size=4", "trainer.max_steps_per_epoch=1", "data.kwargs.val_size=2"], 2,
     f"image {T}/images/b/broken.png cannot be decoded (UnidentifiedImageError: cannot identify image file "
     f"'{T}/images/b/broken.png'); remove or replace it"),
    ("nas.train", [*TRAIN, "data=image_folder", f"data.kwargs.root={T}/images"], 2,
     "data 'image_folder' has 3 channel(s) and 2 classes, but space 'ofa_mbv3_tiny' expects in_chans=1, "
     "n_classes=10; pick a matching search_space or override its kwargs"),
    ("nas.train", [*RUN, "trainer.epochs=2", "resume=true"], 2,
     f"resume=true, but {T}/run was trained with another config; resuming would continue the old run's schedule "
     "and state under new settings:\n  trainer.epochs: 1 -> 2\nRerun with the saved values, pass "
     "allow_config_change=true to resume under the new config anyway, or train into a new out_dir"),
    ("nas.train", [*TRAIN, f"out_dir={T}/run"], 2,
     f"{T}/run already holds a training run; pass resume=true to continue it or choose another out_dir"),
    # nas.evaluate
    ("nas.evaluate", [f"checkpoint={T}/none"], 2,
     f"checkpoint {T}/none does not exist; give a training run directory (with supernet.json) or its checkpoint.pt"),
    ("nas.evaluate", [*EV[:1], "n_random=0", "extremes=false"], 2, "n_random must be an integer >= 1, got 0"),
    ("nas.evaluate", [*EV[:1], "n_random=abc"], 2, "n_random must be an integer >= 0, got 'abc'"),
    ("nas.evaluate", [*EV, "extremes=2"], 2, "extremes must be true or false, got 2"),
    ("nas.evaluate", [*EV, "seed=x"], 2, "seed must be an integer >= 0, got 'x'"),
    ("nas.evaluate", [*EV, "split=nope"], 2, "unknown split 'nope'; choose one of ['train', 'val', 'test']"),
    ("nas.evaluate", [*EV, "n_images=abc"], 2, "n_images must be an integer >= 1, got 'abc'"),
    ("nas.evaluate", [*EV, "calib_images=-5"], 2, "calib_images must be an integer >= 1, got -5"),
    ("nas.evaluate", [*EV, "batch_size=0"], 2, "batch_size must be an integer >= 1, got 0"),
    ("nas.evaluate", [*EV, "device=gpu9"], 2, "device='gpu9' is not a device; use cpu, cuda or cuda:<index>"),
    ("nas.evaluate", [*EV[:1], "archs=[{ks: [7,7,7,7,7,7,7,7,7,7], e: [4,4,4,4,4,4,4,4,4,4], d: [5,2,2,2,2], "
                      "r: 32}]"], 2, 'arch={"ks": [7, 7, 7, 7, 7, 7, 7, 7, 7, 7], "e": [4, 4, 4, 4, 4, 4, 4, 4, 4, 4], '
     '"d": [5, 2, 2, 2, 2], "r": 32} is not an architecture of space \'ofa_mbv3_tiny\': d0=5 is not allowed; '
     "choose one of [1, 2]"),
    ("nas.evaluate", [*EV[:1], "archs=[r32-k3e2]"], 2,
     "arch does not parse: 'r32-k3e2' is not an arch id of space 'ofa_mbv3_tiny': it has 1 stage groups after the "
     "resolution, the space has 5; a valid id looks like 'r32-k7e4.k7e4-k7e4.k7e4-k7e4.k7e4-k7e4.k7e4-k7e4.k7e4'. "
     "Other forms: JSON such as '{\"ks\": [...], \"e\": [...], \"d\": [...], \"r\": 32}'; results=<search dir> rank=N"),
    ("nas.evaluate", [f"checkpoint={T}/two_class", "n_random=1"], 2,
     f"data 'fashion_mnist' has 1 channel(s) and 10 classes, but the supernet {T}/two_class expects in_chans=1, "
     "n_classes=2; pass the data it was trained on (data=...)"),
    ("nas.evaluate", [f"checkpoint={T}/run", "data=image_folder", f"data.kwargs.root={T}/images", "n_random=1"], 2,
     f"data 'image_folder' has 3 channel(s) and 2 classes, but the supernet {T}/run expects in_chans=1, "
     "n_classes=10; pass the data it was trained on (data=...)"),
    ("nas.evaluate", [f"checkpoint={T}/flipped/checkpoint.pt", "n_random=1"], 3,
     f"checkpoint {T}/flipped/checkpoint.pt does not match its content hash: the file was altered or damaged after "
     "it was written. Resume from another copy, or start the run over"),
    # nas.export
    ("nas.export", [f"results={T}/none"], 2,
     f"results='{T}/none' is not a directory; give the out_dir of a finished `python -m nas.search` run"),
    ("nas.export", [f"results={T}/images"], 2,
     f"results='{T}/images' is not a finished search results directory: front_ranked.json, config.yaml missing"),
    ("nas.export", [f"results={T}/truncated"], 3,
     f"{T}/truncated/front_ranked.json is not valid JSON (Unterminated string starting at: line 1 column 3 (char 2)); "
     "the file is truncated or was edited. Rerun the command that wrote it."),
    ("nas.export", [f"results={T}/results", "rank=9"], 2,
     f"rank=9 is past the front: {T}/results has 1 points (rank 0..0)"),
    ("nas.export", [f"results={T}/results", "overwrite=maybe"], 2, "overwrite must be true or false, got 'maybe'"),
    ("nas.export", [f"results={T}/results", f"out={T}/images"], 2,
     f"out='{T}/images' exists and is not empty; pass overwrite=true to replace the subnet exported there, or "
     "choose another out"),
    ("nas.export", [f"results={T}/results", f"out={T}/images", "overwrite=true"], 2,
     f"out='{T}/images' was not created by nas.export (no metadata.json of an exported subnet); overwrite=true "
     "only replaces an exported subnet. Choose an empty or new out"),
    # nas.search_worker
    ("nas.search_worker", [f"checkpoint={T}/run", "storage=memory"], 2,
     "search workers share a persistent storage; got 'memory'. Accepted: postgresql://user:password@host:5432/db "
     "(or any SQLAlchemy RDB URL, e.g. sqlite:///path/study.db); journal:///path/study.log or a path ending in "
     ".log (journal file, on a filesystem shared by workers)"),
    ("nas.search_worker", [*WORKER, "objectives={top1: up}"], 2,
     "objectives.top1='up' is not allowed; choose one of ['max', 'min']"),
    ("nas.search_worker", [*WORKER, "objectives={acc: max}"], 2,
     "objectives key='acc' is not allowed; choose one of ['top1', 'loss', 'macs_M', 'params_M']"),
    # objectives=top1 names an option of the `objectives` config group: hydra's own clean error (exit 1)
    ("nas.search_worker", [*WORKER, "objectives=top1"], 1, None),
    ("nas.search_worker", [*WORKER, "n_trials=0"], 2, "n_trials must be an integer >= 1, got 0"),
    ("nas.search_worker", [*WORKER, "heartbeat_interval=abc"], 2,
     "heartbeat_interval must be an integer >= 1, got 'abc'"),
    # nas.profile
    ("nas.profile", ["hw=macs"], 2,
     "hardware profile 'macs' has no 'build' section: it cannot be measured on this machine; use a measurable one "
     "such as hw=local_cpu (torch) or hw=local_cpu_ort (onnxruntime)"),
    ("nas.profile", ["hw=local_cpu", "space.name=nope"], 2,
     f"space.name='nope': not a registered search space ({SPACES}) and not a 'package.module:factory' spec"),
    ("nas.profile", ["hw=local_cpu", "space.name=ofa_mbv3_tiny", "hw.build.repeats=0", f"out={T}/p.json"], 2,
     "hw.build.repeats must be an int >= 1, got 0"),
    ("nas.profile", ["hw=local_cpu", "space.name=ofa_mbv3_tiny", "validate=2", "validate_passes=0",
                     f"out={T}/p.json"], 2,
     "validate_passes (null: as many as hw.build.passes) must be an integer >= 1, got 0"),
    ("nas.profile", ["hw=local_cpu", "space.name=ofa_mbv3_tiny", "recalibrate=maybe", f"out={T}/p.json"], 2,
     "recalibrate must be true or false, got 'maybe'"),
    ("nas.profile", ["hw=local_cpu", "space.name=ofa_mbv3_tiny", "recalibrate=true", "hw.build.calibration_nets=0",
                     f"out={T}/p.json"], 2,
     "recalibrate re-times the calibration networks: it needs build_network and calibration_nets >= 1 "
     "(hw.build.calibration_nets), got 0"),
    ("nas.profile", ["hw=local_cpu", "space.name=ofa_mbv3_tiny", "+hw.build.bogus=1", f"out={T}/p.json"], 2,
     "hw.build got an unexpected keyword argument 'bogus'"),
    ("nas.profile", ["hw=local_cpu", "space.name=ofa_mbv3_tiny", "hw.build.runtime=nope", f"out={T}/p.json"], 2,
     "unknown timing backend 'nope' Available: onnxruntime, onnxruntime_int8, torch"),
]

MODULES = {"nas.search": "nas.search.__main__", "nas.train": "nas.train.__main__", "nas.evaluate": "nas.evaluate",
           "nas.export": "nas.export", "nas.search_worker": "nas.search_worker", "nas.profile": "nas.profile"}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    """Every file the table refers to: a trained tiny run, a 2-class supernet, a checkpoint with a flipped byte,
    an image folder with a broken PNG, search results (finished, truncated), a profile of another space."""
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from hw_profiles.pricing import space_layer_specs
    from hw_profiles.profile import Entry, HardwareProfile, ProfileMeta
    from nas.search.app import search_from_config
    from nas.search.results import atomic_write_text
    from nas.train.run import run_train
    from search_spaces import create_space

    root = tmp_path_factory.mktemp("bad")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        run_train(compose(config_name="train", overrides=[a.replace(T, str(root)) for a in RUN]))
        search_from_config(compose(config_name="search", overrides=["budget=8", f"out_dir={root / 'done'}",
                                                                    "progress=false"]))
    save_weights(root / "two_class", create_supernet("ofa_mbv3", create_space("ofa_mbv3_tiny", n_classes=2)))
    (root / "flipped").mkdir()
    data = bytearray((root / "run" / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the largest tensor's bytes: torch.load reads it without complaint
    (root / "flipped" / "checkpoint.pt").write_bytes(bytes(data))
    for cls in ("a", "b"):
        (root / "images" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 90, 30)).save(root / "images" / cls / f"{i}.png")
    (root / "images" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "afile").write_text("x")
    (root / "truncated").mkdir()
    (root / "truncated" / "front_ranked.json").write_text('[{"arch')
    (root / "truncated" / "config.yaml").write_text("budget: 5\n")
    (root / "results").mkdir()
    arch = create_space("ofa_mbv3_tiny").max_arch()
    atomic_write_text(root / "results" / "front_ranked.json",
                      json.dumps([{"arch": create_space("ofa_mbv3_tiny").to_dict(arch), "top1": 50.0}]))
    (root / "results" / "config.yaml").write_text(f"resolved_supernet: {root / 'run'}\nexport_data: null\n")
    meta = ProfileMeta(name="local_cpu", device="test", soc=None, runtime="torch", runtime_version=None, threads=1,
                       batch=1, units="ms", method="synthetic", space="ofa_mbv3_tiny")
    HardwareProfile(meta, {s.key(): Entry(mean=0.01) for s in space_layer_specs(create_space("ofa_mbv3_tiny"))}
                    ).save(root / "tiny_profile.json")
    return root


def _run_main(command: str, args: list[str], tmp: Path, capsys) -> tuple[object, str]:
    module = importlib.import_module(MODULES[command])
    argv = [a.replace(T, str(tmp)) for a in args]
    old = sys.argv
    sys.argv = [command, *argv, f"hydra.run.dir={tmp}/hydra", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    code: object = 0
    try:
        module.main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old
        torch.set_num_threads(1)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command,args,code,message", CASES, ids=[f"{c[0]}:{' '.join(c[1])[:60]}" for c in CASES])
def test_bad_input_gives_one_clean_message(tmp, capsys, monkeypatch, command, args, code, message):
    monkeypatch.delenv("NAS_DEBUG", raising=False)
    monkeypatch.chdir(tmp)
    got, err = _run_main(command, args, tmp, capsys)
    assert "Traceback" not in err, err
    if message is None:  # hydra's own config errors: hydra's clean message, exit code 1
        assert got == code, err
        return
    # the registered supernets as this process has them (an earlier test may have imported examples/custom_space,
    # whose module registers 'chain')
    message = message.replace("(fewshot, nb201, ofa_mbv3, quant, vit)", f"({', '.join(sorted(SUPERNETS.names()))})")
    assert (got, err) == (code, f"error: {message.replace(T, str(tmp))}\n")


SUBPROCESS = [("nas.search", ["budget=abc"], 2), ("nas.evaluate", [f"checkpoint={T}/flipped/checkpoint.pt"], 3)]


@pytest.mark.parametrize("command,args,code", SUBPROCESS)
def test_subprocess_prints_one_line(tmp, command, args, code):
    proc = run_cli(["-m", command, *[a.replace(T, str(tmp)) for a in args], f"hydra.run.dir={tmp}/hydra"], cwd=REPO)
    assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_debug_shows_the_traceback(tmp):
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO), "NAS_DEBUG": "1"}
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "nas.search", "budget=abc", f"hydra.run.dir={tmp}/hydra"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "budget must be an integer" in proc.stderr


def test_hydra_verbose_shows_the_traceback_too(tmp):
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "NAS_DEBUG"} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "nas.search", "budget=abc", "hydra.verbose=true",
                           f"hydra.run.dir={tmp}/hydra"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "budget must be an integer" in proc.stderr
