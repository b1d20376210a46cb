"""SIGKILL ``nas.train``, ``nas.evaluate``, ``nas.export`` and ``nas.profile`` (the real commands, in subprocesses)
at several points; whatever the kill hit, every file left behind loads, and rerunning ends where an uninterrupted
run does (bit-identical weights and measurements; a profile keeps every entry measured before the kill)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from hw_profiles.profile import HardwareProfile
from nas.checkpoints import load_checkpoint, load_supernet
from nas.conf import CONF_DIR
from nas.evaluation import read_measurements
from tests.reliability.conftest import REPO, kill_when

T = "{tmp}"
TRAIN = ["search_space=ofa_mbv3_tiny", "data.kwargs.train_limit=96", "data.kwargs.val_size=64",
         "trainer.batch_size=16", "trainer.epochs=2", "trainer.checkpoint_every=1", "trainer.eval_every=1",
         "trainer.eval_images=64", "trainer.calib_images=32", "trainer.calib_batch=32", "trainer.threads=1",
         "trainer.progress=false", "trainer.tensorboard=false", "trainer.log_every=1", "sampler=sandwich",
         "sampler.kwargs.n_random=1"]
EVALUATE = ["n_random=3", "n_images=64", "calib_images=32", "calib_batch=32", "batch_size=64",
            "data.kwargs.val_size=64", "data.kwargs.train_limit=64", "progress=false", "threads=1"]
PROFILE = ["hw=local_cpu", "space.name=ofa_mbv3_tiny", "hw.build.repeats=2", "hw.build.passes=1", "hw.build.warmup=1",
           "hw.build.chunk=8", "hw.build.context=false", "+hw.build.normalise=false", "hw.build.resolutions=[32]",
           "hw.build.calibration_processes=1"]  # one fresh calibration process: the suite's time budget
SLOW = pytest.mark.slow  # more kill points of the same command: the suite's core set stays within its time budget


def _cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name=name, overrides=overrides)


@contextlib.contextmanager
def _as_command():
    """The process settings ``python -m nas.train`` applies at its edge (one intra-op thread, from
    ``trainer.threads=1``): an in-process run compared bit for bit with a command's must use the same, since the
    thread count changes the order of floating-point reductions."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rows(path: Path) -> int:
    try:
        return len(path.read_text().splitlines()) - 1
    except OSError:
        return -1


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted training run (also the supernet that evaluate and export read)."""
    from nas.train.run import run_train

    out = tmp_path_factory.mktemp("straight") / "run"
    with _as_command():
        run_train(_cfg("train", [*TRAIN, f"out_dir={out}"]))
    return out


# (metrics.csv rows logged before the kill, or -1 = as soon as eval.csv appears: the end-of-epoch evaluation)
@pytest.mark.parametrize("after,delay", [(7, 0.02), (-1, 0.05), pytest.param(2, 0.0, marks=SLOW)])
def test_killed_training_resumes_bit_identical(tmp_path, straight, after, delay):
    from nas.train.run import run_train

    out = tmp_path / "run"

    def ready() -> bool:
        return _rows(out / "eval.csv") >= 1 if after < 0 else _rows(out / "metrics.csv") >= after

    code = kill_when(["-m", "nas.train", *TRAIN, f"out_dir={out}", f"hydra.run.dir={tmp_path}/h"], ready, cwd=REPO,
                     log_dir=tmp_path, delay_s=delay)
    assert code == -9, f"not killed (exit {code})"
    state = load_checkpoint(out / "checkpoint.pt")  # whole and hash-verified, whenever the kill landed
    assert not state["finished"]
    with _as_command():
        run_train(_cfg("train", [*TRAIN, f"out_dir={out}", "resume=true"]))
    a, b = load_supernet(out), load_supernet(straight)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert \
        [r.split(",")[:4] for r in (out / "metrics.csv").read_text().splitlines()] == \
        [r.split(",")[:4] for r in (straight / "metrics.csv").read_text().splitlines()]


@pytest.mark.parametrize("delay", [1.5, pytest.param(0.3, marks=SLOW)])
def test_killed_evaluate_leaves_no_partial_csv_and_reruns_identically(tmp_path, straight, delay):
    from nas.evaluation import run_evaluate

    out = tmp_path / "m.csv"
    args = [f"checkpoint={straight}", *EVALUATE]
    code = kill_when(["-m", "nas.evaluate", *args, f"out={out}", f"hydra.run.dir={tmp_path}/h"],
                     lambda: (tmp_path / "h").exists(), cwd=REPO, log_dir=tmp_path, delay_s=delay)
    if out.exists():  # written atomically: complete or absent
        assert len(read_measurements(out)) == 5
    assert code in (-9, 0)
    rerun = run_evaluate(_cfg("evaluate", [*args, f"out={out}"]))
    ref = run_evaluate(_cfg("evaluate", [*args, f"out={tmp_path / 'ref.csv'}"]))
    assert [(r["arch_id"], r["top1"], r["loss"]) for r in rerun.rows] == \
        [(r["arch_id"], r["top1"], r["loss"]) for r in ref.rows]
    assert out.read_text() == (tmp_path / "ref.csv").read_text()


@pytest.mark.parametrize("delay", [0.0, pytest.param(0.4, marks=SLOW)])
def test_killed_export_leaves_a_loadable_subnet_or_none(tmp_path, straight, delay):
    from nas.export_subnet import export_arch
    from search_spaces import create_space
    from supernets import load_subnet

    arch = create_space("ofa_mbv3_tiny").to_dict(create_space("ofa_mbv3_tiny").max_arch())
    results = tmp_path / "results"
    results.mkdir()
    (results / "front_ranked.json").write_text(json.dumps([{"arch": arch, "top1": 50.0}]))
    (results / "config.yaml").write_text(f"resolved_supernet: {straight}\nexport_data: null\n")
    out = tmp_path / "subnet"

    def ready() -> bool:  # the export is writing its temporary directory
        return any(p.name.startswith(".subnet.") for p in tmp_path.iterdir())

    code = kill_when(["-m", "nas.export", f"results={results}", f"out={out}", "recalibrate=false",
                      f"hydra.run.dir={tmp_path}/h"], ready,
                     cwd=REPO, log_dir=tmp_path, delay_s=delay)
    assert code in (-9, 0)
    if out.exists():
        load_subnet(out)
    ref = tmp_path / "ref"
    export_arch(straight, arch, ref, recalibrate=False)
    from nas.export_subnet import export_front_point

    export_front_point(results, rank=0, out=out, checkpoint=straight, recalibrate=False, overwrite=out.exists())
    a, b = load_subnet(out).module.state_dict(), load_subnet(ref).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("after_chunks", [4, pytest.param(1, marks=SLOW)])
def test_killed_profile_build_resumes_keeping_measured_entries(tmp_path, after_chunks):
    from nas.profile import run

    out = tmp_path / "p.json"

    def ready() -> bool:
        try:
            return len(HardwareProfile.load(out)) >= 8 * after_chunks
        except Exception:  # noqa: BLE001 - not written yet
            return False

    code = kill_when(["-m", "nas.profile", *PROFILE, f"out={out}", f"hydra.run.dir={tmp_path}/h"], ready, cwd=REPO,
                     log_dir=tmp_path)
    assert code == -9, f"not killed (exit {code})"
    before = HardwareProfile.load(out)  # every write was atomic: the file loads
    result = run(_cfg("profile", [*PROFILE, f"out={out}"]))
    after = HardwareProfile.load(out)
    assert result.skipped == len(before) and len(after) == result.total
    assert all(after.entries[k] == e for k, e in before.entries.items())  # nothing measured is lost or redone


WORKER = ["n_trials=4", "heartbeat_interval=1", "grace_period=2", "eval.n_images=64", "eval.calib_images=32",
          "eval.calib_batch=32", "eval.batch_size=64", "data.kwargs.val_size=64", "data.kwargs.train_limit=64",
          "seed=1"]


def test_killed_search_worker_trial_is_retried_and_every_result_is_exact(tmp_path, straight):
    """A worker killed while evaluating leaves a RUNNING trial; the next worker fails it after the heartbeat grace
    period and evaluates it again, and every COMPLETE trial holds exactly what evaluating its subnet gives."""
    import optuna
    from optuna.trial import TrialState

    from nas.search.workers import SupernetEvaluator, study_summary, worker_from_config
    from nas.train.run import build_data

    url = f"journal://{tmp_path / 'study.log'}"
    args = [f"storage={url}", f"checkpoint={straight}", *WORKER]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))

    def evaluating_second() -> bool:
        try:
            study = optuna.load_study(study_name="nas_search", storage=storage)
        except Exception:  # noqa: BLE001 - not created yet
            return False
        trials = study.get_trials(deepcopy=False)
        return len(trials) >= 2 and trials[-1].state == TrialState.RUNNING

    code = kill_when(["-m", "nas.search_worker", *args, "worker_id=killed", f"hydra.run.dir={tmp_path}/h"],
                     evaluating_second, cwd=REPO, log_dir=tmp_path, delay_s=0.05)
    assert code == -9, f"not killed (exit {code})"
    result = worker_from_config(_cfg("search_worker", [*args, "worker_id=second"]))
    study = optuna.load_study(study_name="nas_search", storage=storage)
    summary = study_summary(study)
    assert summary["states"]["RUNNING"] == 0 and summary["states"]["COMPLETE"] >= 4
    assert summary["retries"] and result.retried  # the killed trial was re-queued and evaluated by the survivor
    assert len(set(summary["evaluated"])) == len(summary["evaluated"])  # no architecture evaluated twice
    cfg = _cfg("search_worker", args)
    evaluator = SupernetEvaluator(straight, build_data(cfg.data), seed=int(cfg.seed), **dict(cfg.eval))
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.user_attrs["metrics"] == evaluator(evaluator.space.decode(t.user_attrs["x"]))
