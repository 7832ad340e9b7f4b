"""Where a study lives, and how RUNNING trials of dead processes are found and retried.

- default: SQLite `<log_dir>/optuna.db` (one file for every study of this machine);
- `*.journal` or `journal:PATH`: Optuna's journal file, for several processes on one machine;
- any other URL (`sqlite:///...`, `postgresql://...`) goes to Optuna's RDB storage, for many
  machines; `postgresql://` is read with psycopg 3 (`postgresql+psycopg://`, a dependency).

A process killed in mid-trial leaves its trial RUNNING. Two mechanisms turn it into a FAIL
and enqueue one retry of its parameters (`RetryHeartbeatStaleTrialCallback(max_retry=1)`):
Optuna's heartbeat on RDB storages (the trial is stale once its worker has not beaten for
`grace` seconds; this works across machines), and, on every storage, the worker's own record:
each trial stores its host, pid and process start time, so a RUNNING trial whose process is
gone from THIS host is failed at once (the journal storage has no heartbeat).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, StorageInternalError, UpdateFinishedTrialError
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from forecast.core.errors import ForecastError, os_error_line
from forecast.core.files import atomic_path

DEFAULT_DB = "optuna.db"
WORKER_ATTR = "worker"  # user attr "host:pid:start" of the process running a trial
MAX_RETRY = 1  # a trial whose process died is run once more, then left failed
SQLITE_WAIT_S = 10  # how long a write waits for a locked SQLite database


def describe(url: str) -> str:
    """The storage location with any password hidden (for messages and summaries)."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can read: show it as given
        return url


def rdb_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy's own default is psycopg2, not installed)."""
    return "postgresql+psycopg://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url


def default_url(log_dir: Path) -> str:
    return f"sqlite:///{(log_dir / DEFAULT_DB).resolve()}"


def journal_path(url: str) -> Path | None:
    """The journal file a storage argument names, or None for an RDB URL."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    if url.endswith(".journal") and "://" not in url:
        return Path(url)
    return None


def open_storage(url: str, heartbeat: int) -> BaseStorage:
    """Open (creating if needed) the storage a `--storage` argument names.

    Args:
        url: a journal path (`*.journal`, `journal:PATH`) or an RDB URL.
        heartbeat: seconds between heartbeats on RDB storages (0 = no heartbeat); a trial is
            stale after twice that.

    Raises:
        ForecastError: the storage cannot be opened (bad URL, missing driver, unreachable).
    """
    retry = _retry_callback()
    path = journal_path(url)
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            mend_journal(path)
            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            db = Path(url[len("sqlite:///"):])
            if db.is_file() and db.stat().st_size == 0:  # SQLite would write its tables into any empty file
                raise ForecastError(f"storage {db} is an empty file (0 bytes), not a database: delete it to start "
                                    "a new one, or name the database you meant")
            db.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat,
                  "heartbeat_stale_trial_callback": retry} if heartbeat > 0 else {}
        # pre-ping: a connection the server dropped (restart, network) is replaced, not used
        # SQLite: a write waits up to SQLITE_WAIT_S for another process's (each takes milliseconds); a database
        # held longer (an open `sqlite3` shell, a copy tool) is a one-line error within seconds, not a minute
        engine = {"connect_args": {"timeout": SQLITE_WAIT_S}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats: stable in use since 2.x
            return _open_rdb(rdb_url(url), engine, kwargs)
    except ForecastError:
        raise
    except Exception as err:  # sqlalchemy/driver errors have many types; all mean "cannot open"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        missing = missing_module(err)
        if missing is not None:
            first = f"its database driver {missing!r} is not installed"
            if url.startswith("postgresql"):  # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3
                first += "; install the psycopg package: pip install 'psycopg[binary]'"
        raise ForecastError(f"cannot open storage {describe(url)}: {first}") from None


def mend_journal(path: Path) -> str | None:
    """Make a journal whose last record was cut off (power loss, a full disk, a copy taken mid-write)
    whole again before anything reads or appends to it: Optuna would append onto the partial line,
    after which it can no longer read the file at all.

    A cut tail that is itself a complete record (only its line break lost) gets the line break; any
    other partial record is dropped, after the whole file is kept beside it as `<name>.torn-<time>`.
    The check runs under the journal's own lock, so a record another process is writing is never
    taken for a torn one.

    Returns:
        The line said on stderr when the journal was mended, else None.

    Raises:
        ForecastError: the journal is torn and cannot be mended here (read-only).
    """
    if not _torn(path):
        return None
    lock = JournalFileSymlinkLock(str(path))
    try:
        lock.acquire()
    except OSError as err:
        raise ForecastError(f"journal {path} ends in a partial record (a write was cut off) and cannot be mended "
                            f"here ({err.strerror}); copy it to a writable folder and pass that --storage") from None
    try:
        return _mend_locked(path) if _torn(path) else None
    finally:
        lock.release()


def _torn(path: Path) -> bool:
    """Whether a non-empty journal lacks the line break that ends every complete record."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _mend_locked(path: Path) -> str:
    data = path.read_bytes()
    start = data.rfind(b"\n") + 1  # the partial record: data[start:]
    try:
        whole = isinstance(json.loads(data[start:]), dict)  # a record is one JSON object
    except ValueError:
        whole = False
    try:
        if whole:  # only the line break was lost
            with open(path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
            said = f"journal {path}: its last record had lost its line break; restored"
        else:
            keep = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            with atomic_path(keep) as tmp:
                tmp.write_bytes(data)
            os.truncate(path, start)
            said = (f"journal {path}: its last record was cut off ({len(data) - start} bytes: an interrupted "
                    f"write); dropped it and kept the file as it was in {keep}")
    except OSError as err:
        raise ForecastError(f"journal {path} ends in a partial record (a write was cut off) and cannot be "
                            f"mended: {os_error_line(err)}") from None
    print(f"forecast: warning: {said}", file=sys.stderr, flush=True)
    return said


def missing_module(err: BaseException) -> str | None:
    """The module whose import failed somewhere in `err`'s chain (Optuna re-raises it vaguely)."""
    while err is not None:
        if isinstance(err, ModuleNotFoundError) and err.name:
            return err.name
        err = err.__cause__ or err.__context__
    return None


def _open_rdb(url: str, engine: dict, kwargs: dict, tries: int = 5) -> RDBStorage:
    """Workers that start together on an empty database all create Optuna's tables; the losers of
    that race see a unique-key error (PostgreSQL) or "table ... already exists" (SQLite) and simply
    open the tables the winner made."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(tries):
        try:
            return _RDBStorage(url, engine_kwargs=engine, **kwargs)
        except (IntegrityError, OperationalError) as err:
            lost_race = isinstance(err, IntegrityError) or "already exists" in str(err)
            if not lost_race or attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class _RDBStorage(RDBStorage):
    """Optuna's RDB storage whose heartbeat thread outlives a lost connection: a missed beat is
    retried at the next interval, and the main thread, on its next write, reports the loss in
    one line (`forecast.hpo.loop`) instead of a thread printing a traceback."""

    def record_heartbeat(self, trial_id: int) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            super().record_heartbeat(trial_id)
        except (StorageInternalError, SQLAlchemyError):  # Optuna wraps SQLAlchemy's errors in the first
            pass


def _retry_callback() -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


# ------------------------------------------------------------------ dead workers' trials


def worker_id() -> str:
    """`host:pid:start` of this process (the start time tells a reused pid apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    """Process start time in clock ticks since boot (Linux), '' where /proc has none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the "(comm)" field


def worker_is_dead(worker: str) -> bool:
    """True only when `worker` ran on this host and its process no longer exists."""
    host, pid, start = (worker.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine: only the heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return bool(start) and _start_time(int(pid)) not in ("", start)


def recover_dead_trials(study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Fail the RUNNING trials of dead workers and enqueue their retries.

    Args:
        study: the study.
        storage: the storage `study` was opened on (from `open_storage`).

    Returns:
        Numbers of the trials failed here (by the heartbeat or the local process check).
    """
    # This host's dead workers first, so their trials say why ("interrupted") however long ago they died;
    # then the heartbeat for the rest (other machines), which fails a trial without a reason of ours.
    failed = [trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
              if worker_is_dead(str(trial.user_attrs.get(WORKER_ATTR, ""))) and _fail(study, storage, trial)]
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB with heartbeat; a no-op elsewhere
    failed += [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in before]
    return sorted(failed)


def retry_queued(trial: FrozenTrial) -> bool:
    """Whether failing `trial` queues a retry: not once it is itself the MAX_RETRY-th retry."""
    return len(RetryHeartbeatStaleTrialCallback.retry_history(trial)) < MAX_RETRY


def _fail(study: optuna.Study, storage: BaseStorage, trial: FrozenTrial) -> bool:
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    try:
        # killed before the trial recorded its start in full: say why it failed all the same
        if trial.user_attrs.get("reason") is None:
            storage.set_trial_user_attr(trial_id, "reason", "interrupted")
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:  # another worker got there first
        return False
    _retry_callback()(study, storage.get_trial(trial_id))
    return True
