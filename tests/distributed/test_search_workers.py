"""Parallel search workers on one Optuna study: PostgreSQL (a real local server) and a journal file.

Each scenario runs two workers at once, one through the CLI (``python -m nas.search_worker`` in a subprocess), one
through the library (:func:`nas.search.workers.run_worker`), both evaluating subnets of a real supernet with
BN recalibration. Before they start, the study is given (a) a trial that was RUNNING when its worker "died": it
holds the claim of its architecture and sent one heartbeat, and (b) three queued trials encoding one architecture
(two identical, one differing only in an inactive gene). Afterwards every trial must be accounted for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas.checkpoints import save_weights
from nas.data import create_data
from nas.search.worker_storage import FileClaims, SQLClaims, claims_for, open_worker_storage
from nas.search.workers import SupernetEvaluator, run_worker, study_summary
from search_spaces import create_space
from supernets import create_supernet
from tests.distributed.postgres import TempPostgres

REPO = Path(__file__).resolve().parents[2]
N_TRIALS = 12
OBJECTIVES = {"top1": "max", "macs_M": "min"}
DATA = {"val_size": 500, "train_limit": 1000}
EVAL = {"n_images": 100, "calib_images": 100, "calib_batch": 100, "batch_size": 100}
BEAT, GRACE = 1, 5  # s; generous grace so a loaded machine's live workers are never declared dead


@pytest.fixture(scope="module")
def space():
    return create_space("ofa_mbv3_tiny")


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory: pytest.TempPathFactory, space) -> Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("supernet")
    save_weights(directory, create_supernet("ofa_mbv3", space))
    return directory


@pytest.fixture(scope="module")
def evaluator(supernet_dir: Path) -> SupernetEvaluator:
    torch.set_num_threads(1)
    return SupernetEvaluator(supernet_dir, create_data("fashion_mnist", **DATA), **EVAL)


@pytest.fixture(scope="module")
def postgres_url():
    url = os.environ.get("NAS_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    try:
        server = TempPostgres.start()
    except RuntimeError as exc:
        pytest.skip(f"NAS_TEST_POSTGRES_URL is unset and no local PostgreSQL server could be started: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


def _plant(url: str, study_name: str, space) -> dict[str, object]:
    """A dead worker's running trial, and three queued encodings of one architecture."""
    storage = open_worker_storage(url, heartbeat_interval=BEAT, grace_period=GRACE)
    study = optuna.create_study(storage=storage, study_name=study_name, directions=["maximize", "minimize"],
                                load_if_exists=True)
    dists = {g.name: CategoricalDistribution(list(range(len(g.choices)))) for g in space.genes()}
    rng = np.random.default_rng(7)
    with warnings.catch_warnings():  # asking outside study.optimize is the point: this worker never tells
        warnings.simplefilter("ignore", UserWarning)
        dead = study.ask(dists)
    dead_arch = space.decode(np.array([dead.params[g.name] for g in space.genes()]))
    dead.set_user_attr("arch_id", str(space.arch_id(dead_arch)))
    claims_for(storage, url).claim(study_name, str(space.arch_id(dead_arch)), dead._trial_id)
    storage.record_heartbeat(dead._trial_id)
    arch = space.sample(rng)
    while all(space.active(arch)):
        arch = space.sample(rng)
    x = space.encode(arch)
    twin = x.copy()
    gene = int(np.flatnonzero(~np.asarray(space.active(arch)))[0])
    twin[gene] = (twin[gene] + 1) % len(space.genes()[gene].choices)
    assert space.arch_id(space.decode(twin)) == space.arch_id(arch)  # an inactive gene: the same network
    for enc in (x, x, twin):
        study.enqueue_trial({g.name: int(v) for g, v in zip(space.genes(), enc)})
    return {"dead": dead.number, "dead_arch": str(space.arch_id(dead_arch)), "twin_arch": str(space.arch_id(arch))}


def _cli_worker(url: str, study_name: str, supernet_dir: Path, hydra_dir: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "nas.search_worker", f"storage='{url}'", f"study={study_name}",
            f"checkpoint={supernet_dir}", f"n_trials={N_TRIALS}", "worker_id=cli", f"heartbeat_interval={BEAT}",
            f"grace_period={GRACE}", "threads=1", f"hydra.run.dir={hydra_dir}",
            *[f"data.kwargs.{k}={v}" for k, v in DATA.items()], *[f"eval.{k}={v}" for k, v in EVAL.items()]]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _started(study: optuna.Study, worker: str) -> bool:
    return any(t.user_attrs.get("worker") == worker for t in study.get_trials(deepcopy=False))


def _two_workers(url: str, study_name: str, space, supernet_dir: Path, evaluator: SupernetEvaluator,
                 tmp_path: Path) -> tuple[optuna.Study, dict[str, object]]:
    planted = _plant(url, study_name, space)
    study = optuna.load_study(study_name=study_name, storage=open_worker_storage(url, heartbeat_interval=BEAT))
    cli = _cli_worker(url, study_name, supernet_dir, tmp_path / "hydra")
    try:
        deadline = time.monotonic() + 240
        while not _started(study, "cli"):  # the library worker starts once the CLI worker is evaluating
            assert cli.poll() is None, f"CLI worker exited early:\n{cli.stdout.read() if cli.stdout else ''}"
            assert time.monotonic() < deadline, "CLI worker did not start"
            time.sleep(0.1)
        lib = run_worker(study_name, url, space, evaluator, N_TRIALS, objectives=OBJECTIVES, worker_id="lib",
                         heartbeat_interval=BEAT, grace_period=GRACE)
        out, _ = cli.communicate(timeout=300)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, out
    planted["lib"], planted["cli_out"] = lib, out
    return study, planted


def _check_accounted(study: optuna.Study, planted: dict[str, object], space, evaluator: SupernetEvaluator) -> None:
    trials = study.get_trials(deepcopy=False)
    summary = study_summary(study)
    assert summary["states"]["RUNNING"] == 0 and summary["states"]["WAITING"] == 0
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    ids = [t.user_attrs["arch_id"] for t in complete]
    assert len(ids) == len(set(ids)) >= N_TRIALS  # none evaluated twice, budget met
    assert len(ids) <= N_TRIALS + 2  # at most (workers - 1) over the budget, plus the retried trial
    assert set(summary["workers"]) == {"cli", "lib"}  # both workers evaluated subnets
    # the dead worker's trial was failed after its heartbeat stopped, and retried to completion
    assert [t.state for t in trials if t.number == planted["dead"]] == [TrialState.FAIL]
    retries = [t for t in complete if t.system_attrs.get("failed_trial") == planted["dead"]]
    assert [t.user_attrs["arch_id"] for t in retries] == [planted["dead_arch"]]
    # the three queued encodings of one architecture: evaluated once, the others pruned as its duplicates
    twins = [t for t in trials if t.user_attrs.get("arch_id") == planted["twin_arch"]]
    assert len(twins) == 3 and sum(t.state == TrialState.COMPLETE for t in twins) == 1
    for t in trials:  # every pruned trial was skipped for the budget or duplicates an evaluated architecture
        if t.state == TrialState.PRUNED:
            assert t.user_attrs.get("skipped") == "budget" or (
                "duplicate_of" in t.user_attrs and t.user_attrs["arch_id"] in ids), t
        assert t.state != TrialState.FAIL or t.number == planted["dead"]
    # values are real supernet evaluations: re-measure one
    t = complete[0]
    arch = space.decode(np.array(t.user_attrs["x"]))
    again = evaluator(arch)
    assert t.values == [again["top1"], again["macs_M"]]
    assert again["macs_M"] == space.macs(arch) / 1e6


def test_two_workers_share_a_postgresql_study(postgres_url: str, space, supernet_dir: Path,
                                              evaluator: SupernetEvaluator, tmp_path: Path) -> None:
    name = f"pg-{os.getpid()}-{time.time_ns()}"
    study, planted = _two_workers(postgres_url, name, space, supernet_dir, evaluator, tmp_path)
    _check_accounted(study, planted, space, evaluator)


def test_two_workers_share_a_journal_file_study(space, supernet_dir: Path, evaluator: SupernetEvaluator,
                                                tmp_path: Path) -> None:
    url = f"journal://{tmp_path / 'study.log'}"
    study, planted = _two_workers(url, "journal", space, supernet_dir, evaluator, tmp_path)
    _check_accounted(study, planted, space, evaluator)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_claims_are_atomic_under_concurrency(kind: str, tmp_path: Path) -> None:
    if kind == "file":
        store = FileClaims(tmp_path / "claims")
    else:
        import sqlalchemy as sa

        store = SQLClaims(sa.create_engine(f"sqlite:///{tmp_path / 'claims.db'}"))
    owners: list[int] = []
    start = threading.Barrier(8)

    def claim(i: int) -> None:
        start.wait()
        owners.append(store.claim("s", "arch-a", 100 + i))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(owners)) == 1 and owners[0] in range(100, 108)  # one winner, and everyone sees it
    winner = owners[0]
    assert not store.takeover("s", "arch-a", winner + 1000, 7)  # compare-and-swap: wrong expected owner
    assert store.takeover("s", "arch-a", winner, 7) and store.claim("s", "arch-a", 8) == 7
    assert store.claim("other-study", "arch-a", 9) == 9 and store.count("s") == 1
