"""SIGKILL a search (pymoo and Optuna) at several points; the resumed search must equal the uninterrupted one and
every file it wrote must load. Also the exact state a kill between ``study.ask`` and the first suggested parameter
leaves (a RUNNING trial with no parameters: once a ``KeyError: 'ks0'`` on every rerun)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tests.reliability import _jobs
from tests.reliability.conftest import REPO, kill_when

# (searcher, budget, sleep per arch, queries logged before the kill, extra delay after that)
SLOW = pytest.mark.slow  # more kill points: the suite's core set stays within its time budget
POINTS = [
    ("pymoo_nsga2", 60, 0.01, 35, 0.013),
    ("optuna_tpe", 16, 0.005, 0, 0.0),  # as soon as optuna.db exists: during study creation / the first trials
    ("optuna_tpe", 16, 0.005, 6, 0.004),
    pytest.param("pymoo_nsga2", 60, 0.01, 1, 0.0, marks=SLOW),
    # a kill while the journal's lock file is held: the resumed run waits out Optuna's 30 s lock grace period
    pytest.param("optuna_tpe_journal", 16, 0.005, 5, 0.004, marks=SLOW),
    pytest.param("optuna_tpe_journal", 16, 0.005, 11, 0.011, marks=SLOW),
    pytest.param("optuna_nsga2", 16, 0.005, 8, 0.007, marks=SLOW),
]

_REFERENCE: dict[tuple[str, int], object] = {}


def _reference(tmp_path_factory, searcher: str, budget: int):
    if (searcher, budget) not in _REFERENCE:
        _REFERENCE[searcher, budget] = _jobs.search(tmp_path_factory.mktemp("ref"), searcher, budget)
    return _REFERENCE[searcher, budget]


def _logged(out: Path) -> int:
    try:
        return len(json.loads((out / "checkpoint.json").read_text())["queries"])
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.parametrize("searcher,budget,sleep_s,after,delay", POINTS)
def test_killed_search_resumes_to_the_uninterrupted_result(tmp_path, tmp_path_factory, searcher, budget, sleep_s,
                                                           after, delay):
    out = tmp_path / "run"

    def ready() -> bool:
        return (out / "optuna.db").exists() if after == 0 else _logged(out) >= after

    code = kill_when(["-m", "tests.reliability._jobs", "search", str(out), searcher, str(budget), str(sleep_s)],
                     ready, cwd=REPO, log_dir=tmp_path, delay_s=delay)
    assert code == -9, f"the job was not killed (exit {code}); make it slower"
    if (out / "checkpoint.json").exists():  # whatever instant the kill hit, the checkpoint is whole
        json.loads((out / "checkpoint.json").read_text())
    resumed = _jobs.search(out, searcher, budget)
    full = _reference(tmp_path_factory, searcher, budget)
    assert resumed.arch_ids == full.arch_ids
    np.testing.assert_array_equal(resumed.F, full.F)
    _check_files(out, resumed, budget)


def _check_files(out: Path, result, budget: int) -> None:
    doc = json.loads((out / "result.json").read_text())
    assert doc["n_queries"] == budget == result.n
    with open(out / "evaluated.csv", newline="") as fh:
        assert [r["arch_id"] for r in csv.DictReader(fh)] == result.arch_ids
    ckpt = json.loads((out / "checkpoint.json").read_text())
    assert [q["x"] for q in ckpt["queries"]] == result.X.tolist()  # checkpoint == result
    storage = f"sqlite:///{out / 'optuna.db'}" if (out / "optuna.db").exists() else \
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.log"))) \
        if (out / "study.log").exists() else None
    if storage is not None:  # ... == study: every trial told, none left running
        study = optuna.load_study(study_name="nas_search", storage=storage)
        done = study.get_trials(states=(TrialState.COMPLETE,))
        space = _space("optuna")
        told = [space.encode(space.decode(t.user_attrs["x"])).tolist() for t in done]
        # a repeated proposal is a trial too, but not a new query: compare distinct architectures in query order
        assert [x for i, x in enumerate(told) if x not in told[:i]] == result.X.tolist()
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.parametrize("params_before_kill", [0, 3])
def test_optuna_resumes_a_trial_killed_before_or_while_suggesting(tmp_path, params_before_kill):
    """A RUNNING trial with no (or some) parameters is failed, re-queued, and the run still equals the straight one."""
    full = _jobs.search(tmp_path / "full", "optuna_tpe", 8)
    out = tmp_path / "run"
    _jobs.search(out, "optuna_tpe", 5)
    study = optuna.load_study(study_name="nas_search", storage=f"sqlite:///{out / 'optuna.db'}")
    trial = study.ask()  # what a kill leaves: trial 5 created, cut after k of its parameters
    for gene in _space("optuna").genes()[:params_before_kill]:
        trial.suggest_categorical(gene.name, list(range(len(gene.choices))))
    resumed = _jobs.search(out, "optuna_tpe", 8)
    assert resumed.arch_ids == full.arch_ids
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 8


def _space(searcher: str):
    from search_spaces import create_space

    return create_space(_jobs.space_of(searcher))
