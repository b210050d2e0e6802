"""Optuna storage and studies for a sweep (their samplers and pruners: mfexp/sweep/search.py).

Default storage: Optuna's journal file `sweeps/<name>/optuna.journal`, safe for several
processes on one machine. `sweep.storage=<URL>` takes any Optuna RDB URL (sqlite:///...,
postgresql://...), with heartbeats so a killed worker's trial does not stay RUNNING: after
the grace period (2 heartbeats) the next worker to start a trial marks it FAIL, enqueues a retry
of it and marks its MLflow run KILLED. MFEXP_HEARTBEAT_S sets the heartbeat (default 30 s).
Stores are created once, in the main process, before its workers start; separate invocations
(other machines) that create the same fresh database at the same moment are serialised by
retrying (Optuna's table creation is not safe against concurrent creators); `exclusive()` is a
lock shared by all of a sweep's processes for the check-then-act steps after that.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import random
import threading
import time
import warnings
import zlib
from pathlib import Path
from typing import Iterator, Optional

import optuna
from optuna.storages.journal import JournalRedisBackend
from optuna.trial import TrialState
from sqlalchemy import text
import sqlalchemy.exc

from mfexp.config import SweepConfig
from mfexp.errors import ConfigError
from mfexp.sweep import journal
from mfexp.sweep.results import FAIL_REASON_ATTR, MLFLOW_RUN_ATTR, PENDING_RUN_ATTR, WORKER_ATTR
from mfexp.track.tracker import kill_trial_run, redact

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # toward sweep.n_trials; FAIL does not count
HEARTBEAT_S = 30  # default; MFEXP_HEARTBEAT_S=<seconds> overrides it (tests use 1-2 s)
CREATE_ATTEMPTS = 6

log = logging.getLogger("mfexp.sweep")


def sweep_dir(sweep: SweepConfig) -> Path:
    return Path(sweep.root) / sweep.name


def val_predictions_path(sweep: SweepConfig, model: str, number: int) -> Path:
    """Where a complete trial's holdout predictions (its kept network's, at its best epoch) are kept:
    the blend takes the best trial's from here instead of training it again (best.py)."""
    return sweep_dir(sweep) / "val_predictions" / f"{model}-{number}.npy"


def kept_network_path(sweep: SweepConfig, model: str, number: int) -> Path:
    """Where a complete trial keeps its network's weights at its best epoch, for a model evaluated on
    the test part as it was searched (no refit, one seed): its test evaluation loads them instead of
    training it again (best.py). Removed once that model's evaluation is recorded."""
    return sweep_dir(sweep) / "networks" / f"{model}-{number}.params"


def drop_kept_networks(sweep: SweepConfig, model: str) -> None:
    """Remove `model`'s kept networks (1-2 MB each) once its evaluation is recorded: its best is logged
    in MLflow by then, and a later best is a new trial, which keeps its own."""
    for path in (sweep_dir(sweep) / "networks").glob(f"{model}-*.params"):
        path.unlink(missing_ok=True)


def study_name(sweep: SweepConfig, model: str) -> str:
    return f"{sweep.name}-{model}"


def open_storage(sweep: SweepConfig) -> optuna.storages.BaseStorage:
    """The sweep's storage; raises ConfigError (naming sweep.storage) when it cannot be used."""
    if not sweep.storage:
        folder = sweep_dir(sweep)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "optuna.journal"
            path.touch(exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot write the sweep's storage in {folder}/ ({err.strerror}). Make the "
                              "folder writable, or set sweep.root=<folder> or sweep.storage=<URL>.") from err

        journal.repair(path)  # a torn last record (a worker killed mid-write) would stop every start;
                              # a journal unreadable from its first record is refused, left as it is
        return optuna.storages.JournalStorage(journal.SafeJournalFileBackend(str(path)))
    if "://" not in sweep.storage:
        raise ConfigError(f"sweep.storage must be an Optuna RDB URL such as sqlite:///sweep.db or "
                          f"postgresql://user@host/db, got {redact(sweep.storage)!r}.")
    if sweep.storage.startswith(("grpc://", "redis://", "rediss://")):
        return _open_tier(sweep.storage)
    try:
        return _create_rdb_storage(sweep.storage, heartbeat_seconds())
    except ConfigError:
        raise
    except Exception as err:  # SQLAlchemy/driver errors: say which URL and what to do
        raise ConfigError(f"cannot open sweep.storage={redact(sweep.storage)}: {type(err).__name__}: "
                          f"{redact(str(err)).splitlines()[0]}. Check the URL, that the database server "
                          "is running and reachable, and that its driver is installed "
                          "(postgresql:// needs psycopg, part of make install).") from err


def heartbeat_seconds() -> int:
    raw = os.environ.get("MFEXP_HEARTBEAT_S", "").strip()
    if not raw:
        return HEARTBEAT_S
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"MFEXP_HEARTBEAT_S must be a whole number of seconds >= 1, got {raw!r}.")
    return value


def _create_rdb_storage(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """RDBStorage, tolerating other workers that create the same fresh database at the same time:
    Optuna's create_all / version row / alembic stamp then collide (UniqueViolation on pg_type,
    DuplicateTable, duplicate version row); once the winner has committed, a retry finds the
    tables and goes through."""
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat,
                                                  heartbeat_stale_trial_callback=StaleTrialCallback())
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            if attempt == CREATE_ATTEMPTS:
                raise
            log.debug("storage creation collided with another worker (%s); retrying", type(err).__name__)
            time.sleep(random.uniform(0.2, 0.5) * attempt)
    raise AssertionError("unreachable")


class StaleTrialCallback:
    """Run by Optuna for each trial it fails for a stale heartbeat (its worker died): enqueue one
    retry of it (retry_once), then mark the dead trial's MLflow run KILLED."""

    def __init__(self, max_retry: int = 1):
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.warning("trial %d of %s lost its worker (no heartbeat): marked FAIL and retried",
                    trial.number, study.study_name)
        retry_once(study, trial, self.max_retry)
        kill_mlflow_run(trial, "worker lost (no heartbeat)", study.study_name)


# What a retry must not inherit from the trial its dead worker left: whose it was (another
# worker's orphan check would fail the retry as the dead worker's before it records its own) and
# which MLflow run it had.
NOT_RETRIED = (WORKER_ATTR, MLFLOW_RUN_ATTR, PENDING_RUN_ATTR, FAIL_REASON_ATTR)


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> Optional[int]:
    """Seconds between a trial's heartbeats where the storage keeps them (RDB with an interval set),
    else None (the journal file, Redis)."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if callable(get) else None


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """A trial's id in its storage, for the storage's own calls (record_heartbeat, set_trial_user_attr):
    looked up by study name and trial number, as Optuna keeps Trial's own id private."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def retry_once(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int = 1) -> bool:
    """Enqueue a WAITING copy of a trial its worker's death failed: same params and user attrs
    (a reference trial is retried as the reference), system attrs `failed_trial` (the first of the
    chain) and `retry_history`, as Optuna's RetryHeartbeatStaleTrialCallback writes them. At most
    `max_retry` retries per chain; returns whether one was enqueued. Whichever path found the dead
    worker (stale heartbeat, or a dead pid on this host), the outcome is the same."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        return False
    system_attrs = {**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                    "retry_history": history}
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k not in NOT_RETRIED},
        system_attrs=system_attrs))
    return True


def kill_mlflow_run(trial: optuna.trial.FrozenTrial, reason: str, study_name: str,
                    headed: Optional[dict] = None) -> None:
    """Mark the MLflow run of a trial whose worker died FAIL and KILLED (tracking.kill_trial_run), found
    by the run id on the trial, else where the trial said its run goes (PENDING_RUN_ATTR), else where
    `headed` says (its worker died before the trial could say)."""
    kill_trial_run(study_name, trial.number, trial.params, reason, run_id=trial.user_attrs.get(MLFLOW_RUN_ATTR),
                   headed=trial.user_attrs.get(PENDING_RUN_ATTR) or headed)


@contextlib.contextmanager
def exclusive(sweep: SweepConfig, storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """Held by one process of this sweep at a time, on every machine that shares its storage: for
    the check-then-act steps of starting a sweep (enqueue the reference trial into an empty study
    once, when several workers start at the same moment). PostgreSQL: an advisory lock (released
    if the holder dies); MySQL: GET_LOCK; Redis: a Redis lock; SQLite and the journal file: a file
    lock beside them. `storage` is the one open_storage returned (an RDBStorage's engine is public)."""
    engine = getattr(storage, "engine", None)
    name = f"mfexp.sweep:{sweep.name}"
    if engine is not None and engine.dialect.name in ("postgresql", "mysql", "mariadb"):
        pg = engine.dialect.name == "postgresql"
        key = {"k": zlib.crc32(name.encode()) if pg else name[:64]}
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)" if pg else "SELECT GET_LOCK(:k, -1)"), key)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)" if pg else "SELECT RELEASE_LOCK(:k)"), key)
        return
    if sweep.storage and sweep.storage.startswith(("redis://", "rediss://")):
        with _redis_lock(sweep.storage, name):
            yield
        return
    if engine is not None and engine.dialect.name == "sqlite" and engine.url.database:
        path = Path(f"{engine.url.database}.lock")
    elif engine is None and not sweep.storage:
        path = sweep_dir(sweep) / ".prepare.lock"
    else:
        yield  # another kind of storage: no lock
        return

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _redis_lock(url: str, name: str, expiry_s: int = 60) -> Iterator[None]:
    """A Redis lock (SET NX with an expiry, so a dead holder frees it after a minute), renewed
    while held: the end-of-sweep evaluation it guards can take longer than the expiry."""
    import redis  # an optional extra (pip install 'mfexp[redis]'): imported only where a redis:// URL is used

    lock = redis.Redis.from_url(url).lock(name, timeout=expiry_s)
    lock.acquire()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(expiry_s / 3):
            try:
                lock.reacquire()
            except redis.RedisError:
                return

    renewer = threading.Thread(target=renew, daemon=True, name="mfexp-redis-lock")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("the sweep's Redis lock %s had expired before it was released", name)


def _open_tier(url: str) -> optuna.storages.BaseStorage:
    """grpc://host:port: Optuna's gRPC storage proxy (run_grpc_proxy_server in front of an RDB);
    redis://...: Optuna's journal on Redis. Neither has heartbeats (see docs/scaling.md)."""
    if url.startswith("grpc://"):
        _needs("grpc", "sweep.storage=grpc://...", "pip install grpcio (into .venv)")
        host, _, port = url[len("grpc://"):].rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"sweep.storage must look like grpc://host:port, got {redact(url)!r}.")
        return optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    _needs("redis", "sweep.storage=redis://...", "make install (the redis extra), or pip install redis (into .venv)")
    import redis  # optional, as above: _needs said what to install when it is missing

    try:
        redis.Redis.from_url(url, socket_connect_timeout=10).ping()
    except (redis.RedisError, ValueError) as err:
        raise ConfigError(f"cannot open sweep.storage={redact(url)}: {type(err).__name__}: "
                          f"{redact(str(err)).splitlines()[0] if str(err) else ''}. Check the URL and that "
                          "the Redis server is running and reachable.") from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.JournalStorage(JournalRedisBackend(url))


def _needs(module: str, key: str, how: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{key} needs the '{module}' package, which is not installed: {how}, or use another "
                          "storage (sweep.storage=null: the journal file; or an RDB URL).")


def counted_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))
