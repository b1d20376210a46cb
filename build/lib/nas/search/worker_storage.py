"""Shared Optuna storages for search workers: heartbeats, stale-trial retry, and atomic architecture claims.

Optuna (Akiba et al., KDD 2019) lets many processes share a study through an RDB (PostgreSQL, MySQL, SQLite) or a
journal file. Two things are added here for the parallel search workers of :mod:`nas.search.workers`:

- **No lost trials.** ``RDBStorage`` records a heartbeat per running trial; a trial whose worker stopped beating
  for ``grace_period`` seconds is marked FAIL by the next worker and re-queued (WAITING, same parameters) by
  Optuna's ``RetryHeartbeatStaleTrialCallback``. Optuna 5.0's ``JournalStorage`` has no heartbeat, so
  :class:`HeartbeatJournalStorage` implements Optuna's own heartbeat interface on top of it (the beat is a trial
  system attribute, i.e. one journal record), and ``study.optimize`` then fails and retries stale trials in exactly
  the same way.
- **No architecture evaluated twice.** Samplers may propose the same architecture in two workers at once (or two
  encodings of one architecture). A *claim* maps (study, arch id) to the trial that evaluates it and is taken
  atomically: a row under a unique constraint in the same database for RDB storages, a lock-protected claims file
  beside the journal (Optuna's NFS-safe ``JournalFileOpenLock``) for journal storages. A claim held by a FAILed or
  PRUNED trial is taken over with a compare-and-swap, so retries and later proposals can still evaluate it.
"""

from __future__ import annotations

import abc
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

try:  # Optuna >= 4.9
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryCallback
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as RetryCallback  # type: ignore[no-redef]

__all__ = ["WorkerStorageError", "open_worker_storage", "HeartbeatJournalStorage", "ClaimStore", "SQLClaims",
           "FileClaims", "claims_for", "journal_path", "HEARTBEAT_ATTR"]

HEARTBEAT_ATTR = "nas:heartbeat"
URL_FORMS = ("postgresql://user:password@host:5432/db (or any SQLAlchemy RDB URL, e.g. sqlite:///path/study.db)",
             "journal:///path/study.log or a path ending in .log (journal file, on a filesystem shared by workers)")


class WorkerStorageError(ValueError):
    """A storage URL that search workers cannot share (or cannot open)."""


def journal_path(url: str) -> Path | None:
    """The journal file of a ``journal://`` URL or ``*.log`` path, None for RDB URLs."""
    if url.startswith("journal://"):
        return Path(url[len("journal://"):])
    return Path(url) if url.endswith(".log") else None


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """``JournalStorage`` with Optuna's heartbeat protocol, so ``study.optimize`` fails and retries stale trials."""

    def __init__(self, path: str | Path, *, heartbeat_interval: int, grace_period: int | None = None,
                 stale_trial_callback: Any = None) -> None:
        super().__init__(JournalFileBackend(str(path)))
        if heartbeat_interval <= 0:
            raise WorkerStorageError(f"heartbeat_interval must be a positive number of seconds, got "
                                     f"{heartbeat_interval}")
        self.heartbeat_interval = int(heartbeat_interval)
        self.grace_period = int(grace_period) if grace_period is not None else 2 * self.heartbeat_interval
        self._stale_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker declared the trial stale; its tell will fail loudly

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            start = t.datetime_start.timestamp() if t.datetime_start is not None else now
            # retried trials inherit the failed trial's system attributes: a beat older than the start is not theirs
            last = max(float(t.system_attrs.get(HEARTBEAT_ATTR, start)), start)
            if now - last > self.grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self._stale_callback

    def get_failed_trial_callback(self) -> Any:  # the abstract method's name before Optuna 4.9
        return self._stale_callback


def open_worker_storage(url: str, *, heartbeat_interval: int = 10, grace_period: int | None = None,
                        max_retry: int | None = 3) -> BaseStorage:
    """A shared storage with heartbeats every ``heartbeat_interval`` s and ``max_retry`` retries of stale trials."""
    if not isinstance(url, str) or url in ("", "memory", ":memory:"):
        raise WorkerStorageError(f"search workers share a persistent storage; got {url!r}. Accepted: "
                                 f"{'; '.join(URL_FORMS)}")
    with warnings.catch_warnings():  # heartbeats and retries are "experimental" in Optuna, but stable since 2.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _open(url, heartbeat_interval, grace_period, RetryCallback(max_retry=max_retry))


def _open(url: str, heartbeat_interval: int, grace_period: int | None, retry: Any) -> BaseStorage:
    path = journal_path(url)
    try:
        if path is not None:
            if not path.parent.is_dir():
                raise FileNotFoundError(f"directory {path.parent} does not exist")
            return HeartbeatJournalStorage(path, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                           stale_trial_callback=retry)
        try:
            return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              heartbeat_stale_trial_callback=retry)
        except TypeError:  # pragma: no cover - Optuna < 4.9 names the callback failed_trial_callback
            return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              failed_trial_callback=retry)
    except Exception as exc:  # noqa: BLE001 - every backend failure becomes one typed error naming the forms
        raise WorkerStorageError(f"cannot open Optuna storage {url!r}: {type(exc).__name__}: {exc}. Accepted: "
                                 f"{'; '.join(URL_FORMS)}") from exc


class ClaimStore(abc.ABC):
    """Atomic ``(study, arch id) -> trial id`` claims. Subclasses implement the three primitives."""

    @abc.abstractmethod
    def claim(self, study: str, arch_id: str, trial_id: int) -> int:
        """Claim ``arch_id`` for ``trial_id`` unless claimed; returns the owning trial id."""

    @abc.abstractmethod
    def takeover(self, study: str, arch_id: str, old: int, new: int) -> bool:
        """Move the claim from ``old`` to ``new`` iff ``old`` still owns it (compare-and-swap)."""

    @abc.abstractmethod
    def count(self, study: str) -> int:
        """Number of distinct architectures claimed in ``study``."""


def _key(arch_id: str) -> str:
    return hashlib.sha256(arch_id.encode()).hexdigest()


class SQLClaims(ClaimStore):
    """Claims as rows of table ``nas_arch_claims`` (key: study + SHA-256 of the arch id) in the study's database."""

    def __init__(self, engine: Any) -> None:
        import sqlalchemy as sa

        self.sa, self.engine = sa, engine
        meta = sa.MetaData()
        self.table = sa.Table("nas_arch_claims", meta, sa.Column("study", sa.String(512), primary_key=True),
                              sa.Column("arch_key", sa.String(64), primary_key=True),
                              sa.Column("trial_id", sa.Integer, nullable=False))
        try:
            meta.create_all(engine, checkfirst=True)
        except sa.exc.SQLAlchemyError:
            # two workers created the table at the same moment; it must exist now
            if not sa.inspect(engine).has_table("nas_arch_claims"):
                raise

    def claim(self, study: str, arch_id: str, trial_id: int) -> int:
        sa, t, key = self.sa, self.table, _key(arch_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(t.insert().values(study=study, arch_key=key, trial_id=trial_id))
            return trial_id
        except sa.exc.IntegrityError:
            with self.engine.connect() as conn:
                return int(conn.execute(sa.select(t.c.trial_id).where(t.c.study == study,
                                                                      t.c.arch_key == key)).scalar_one())

    def takeover(self, study: str, arch_id: str, old: int, new: int) -> bool:
        t = self.table
        with self.engine.begin() as conn:
            res = conn.execute(t.update().where(t.c.study == study, t.c.arch_key == _key(arch_id),
                                                t.c.trial_id == old).values(trial_id=new))
        return res.rowcount == 1

    def count(self, study: str) -> int:
        sa, t = self.sa, self.table
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.study == study)).scalar_one())


class FileClaims(ClaimStore):
    """Claims as JSON lines in ``<journal>.claims``, read and appended under an exclusive lock file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = JournalFileOpenLock(str(self.path))

    def _owners(self, study: str) -> dict[str, int]:
        owners: dict[str, int] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                rec = json.loads(line)
                if rec["study"] == study:
                    owners[rec["arch_id"]] = int(rec["trial_id"])
        return owners

    def _append(self, study: str, arch_id: str, trial_id: int) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"study": study, "arch_id": arch_id, "trial_id": trial_id}) + "\n")
            fh.flush()

    def claim(self, study: str, arch_id: str, trial_id: int) -> int:
        self.lock.acquire()
        try:
            owner = self._owners(study).get(arch_id)
            if owner is None:
                self._append(study, arch_id, trial_id)
                return trial_id
            return owner
        finally:
            self.lock.release()

    def takeover(self, study: str, arch_id: str, old: int, new: int) -> bool:
        self.lock.acquire()
        try:
            if self._owners(study).get(arch_id) != old:
                return False
            self._append(study, arch_id, new)
            return True
        finally:
            self.lock.release()

    def count(self, study: str) -> int:
        self.lock.acquire()
        try:
            return len(self._owners(study))
        finally:
            self.lock.release()


def claims_for(storage: BaseStorage, url: str) -> ClaimStore:
    """The claim store that lives with ``storage`` (same database, or beside the journal file)."""
    path = journal_path(url)
    if path is not None:
        return FileClaims(path.with_name(path.name + ".claims"))
    engine = getattr(storage, "engine", None)
    if engine is None:
        raise WorkerStorageError(f"storage {type(storage).__name__} for {url!r} has no database engine for claims; "
                                 f"use one of: {'; '.join(URL_FORMS)}")
    return SQLClaims(engine)
