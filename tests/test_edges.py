"""Nothing lost at the edges: a torn journal, a full disk, Redis storage, a tracking server that
restarts, an authenticated tracking server. (One test evaluation per sweep across worker commands:
tests/test_scale_out.py.)

Each case runs against the real component, started by the test: a tmpfs mounted and filled
(root only), a redis-server and an `mlflow server` on 127.0.0.1 on free ports. A case whose
component cannot be had here skips and says why; in CI (CI set) it fails instead (tests/ci_backends.py)."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import fresh_mlflow_store, join_all, wait_for
from mfexp.config import SweepConfig
from mfexp.errors import DiskFull
from mfexp.sweep import journal
from mfexp.sweep.storage import open_storage, sweep_dir

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
REPO = Path(__file__).resolve().parent.parent  # the tree under test, also in the processes it starts


# --- 1. a torn journal ---------------------------------------------------------------------------

def _journal_with_trials(tmp_path, n=3):
    sweep = SweepConfig(name="torn", root=str(tmp_path / "sweeps"))
    study = optuna.create_study(study_name="torn-x", storage=open_storage(sweep))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
    return sweep, sweep_dir(sweep) / "optuna.journal"


def _values(sweep):
    study = optuna.load_study(study_name="torn-x", storage=open_storage(sweep))
    return [(t.number, t.state, t.params) for t in study.get_trials(deepcopy=False)]


def _record(**fields) -> bytes:
    return json.dumps({"op_code": 4, "worker_id": "w", **fields}, separators=(",", ":")).encode()


def test_a_partial_last_record_is_moved_aside_and_the_sweep_resumes(tmp_path, capsys):
    sweep, path = _journal_with_trials(tmp_path)
    before, clean = _values(sweep), path.read_bytes()
    partial = _record(study_id=0, datetime_start="2024-01-01")[:25]  # a worker killed mid-write
    path.write_bytes(clean + partial)

    storage = open_storage(sweep)
    err = capsys.readouterr().err
    assert f"the journal {path} was torn" in err and f"skipped the {len(partial)} bytes" in err
    assert path.read_bytes() == clean  # the clean journal: every complete record, nothing else
    torn = list(path.parent.glob("optuna.journal.torn-*"))
    assert len(torn) == 1 and torn[0].read_bytes() == clean + partial and str(torn[0]) in err
    study = optuna.load_study(study_name="torn-x", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)  # and the sweep goes on
    after = _values(sweep)
    assert after[:3] == before and [n for n, _, _ in after] == [0, 1, 2, 3, 4]
    assert all(state == TrialState.COMPLETE for _, state, _ in after)


def test_a_partial_record_with_the_next_one_written_after_it_is_repaired(tmp_path, capsys):
    """The full-disk tear: a partial record, then the next append straight after it on the same
    line. Optuna itself can no longer open such a journal; mfexp keeps everything before it."""
    sweep, path = _journal_with_trials(tmp_path)
    before, clean = _values(sweep), path.read_bytes()
    tail = _record(study_id=0, datetime_start="x")[:30] + _record(trial_id=1) + b"\n" + _record(trial_id=2) + b"\n"
    path.write_bytes(clean + tail)
    from optuna.storages.journal import JournalFileBackend

    with pytest.raises(ValueError):  # the failure this guards against (JSONDecodeError is a ValueError)
        optuna.load_study(study_name="torn-x", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))

    assert _values(sweep) == before
    err = capsys.readouterr().err
    assert f"skipped the {len(tail)} bytes after them (3 partial or unapplied record(s)" in err
    assert path.read_bytes() == clean
    assert _values(sweep) == before and "torn" not in capsys.readouterr().err  # repaired once


@pytest.mark.parametrize("content", [
    os.urandom(4096),  # random bytes: a file that is no journal at all
    b"\n".join(os.urandom(64) for _ in range(20)) + b"\n",  # lines of them
    b'{"version":1,"trials":[]}\n' + _record(study_id=0) + b"\n",  # JSON, but not Optuna's
    _record(study_id=0, datetime_start="2024-01-01")[:25],  # the first record cut short, nothing before it
], ids=["random bytes", "random lines", "other JSON", "first record cut short"])
def test_a_journal_unreadable_from_its_first_record_is_refused_and_kept_as_it_is(content, tmp_path):
    sweep = SweepConfig(name="foreign", root=str(tmp_path / "sweeps"))
    path = sweep_dir(sweep) / "optuna.journal"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    from mfexp.errors import DataError

    with pytest.raises(DataError, match=f"the sweep's journal {path} cannot be read from its first record") as err:
        open_storage(sweep)
    assert f"mv {path} {path}.bad" in str(err.value)
    assert path.read_bytes() == content and sorted(path.parent.iterdir()) == [path]  # no copy, no lock left


def test_a_sweep_on_a_journal_of_random_bytes_exits_2_and_keeps_it(tmp_path, ratings_file):
    """The command line: one line, exit 2, the file byte for byte as it was, nothing trained or recorded."""
    content = os.urandom(8192)
    root = tmp_path / "sweeps"
    (root / "foreign").mkdir(parents=True)
    (root / "foreign" / "optuna.journal").write_bytes(content)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "mfexp.sweep", *_sweep_args(ratings_file, root, "foreign")],
                         cwd=tmp_path, env=_sweep_env(uri), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.startswith("mfexp: error: the sweep's journal ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr and "Resuming" not in out.stderr and "trial" not in out.stdout
    assert (root / "foreign" / "optuna.journal").read_bytes() == content
    assert sorted(p.name for p in (root / "foreign").iterdir()) == ["optuna.journal"]


def test_a_clean_journal_is_left_alone(tmp_path, capsys):
    sweep, path = _journal_with_trials(tmp_path)
    clean, inode = path.read_bytes(), path.stat().st_ino
    open_storage(sweep)
    assert path.read_bytes() == clean and path.stat().st_ino == inode
    assert not list(path.parent.glob("*.torn-*")) and capsys.readouterr().err == ""


def test_an_append_that_meets_a_full_disk_leaves_no_partial_record(tmp_path, monkeypatch):
    sweep, path = _journal_with_trials(tmp_path)
    clean = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # what write() does on a file system that fills mid-record
        if len(data) > 8:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    study = optuna.load_study(study_name="torn-x", storage=open_storage(sweep))
    monkeypatch.setattr(journal.os, "write", half_then_full)
    with pytest.raises(DiskFull, match=f"disk full \\(ENOSPC\\) while writing {path}"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    monkeypatch.undo()
    assert path.read_bytes() == clean  # truncated back: the next start needs no repair
    assert [n for n, _, _ in _values(sweep)] == [0, 1, 2]


def test_a_disk_full_error_reaches_the_user_as_one_line_naming_the_path(tmp_path):
    code = ("import errno, sys\nfrom mfexp.errors import friendly_errors\n"
            "@friendly_errors\ndef main():\n    raise OSError(errno.ENOSPC, 'No space left on device', '/mnt/x/report.md')\n"
            "main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("mfexp: error: disk full (ENOSPC) while writing /mnt/x/report.md")
    assert "Traceback" not in out.stderr


def test_a_tracker_records_again_once_the_store_answers_and_says_exactly_what_it_missed(
        cfg, tiny_data, mlflow_uri, monkeypatch):
    import mlflow

    from mfexp.experiment import train_and_track
    from mfexp.track.tracker import Tracker

    monkeypatch.setenv("MFEXP_TRACKING_RETRY_S", "0")  # try again at the next call
    real = mlflow.log_metrics

    def down_at_epochs_2_and_3(metrics, step=None, **kw):
        if step in (2, 3):
            raise mlflow.exceptions.MlflowException("Connection refused")
        return real(metrics, step=step, **kw)

    monkeypatch.setattr(mlflow, "log_metrics", down_at_epochs_2_and_3)
    cfg.train.epochs, cfg.train.patience = 5, None
    tracker = Tracker(cfg.tracking)
    with tracker.run(run_name="gap", params={}, tags={}):
        train_and_track(cfg, tiny_data, tracker, eval_test=False, final_test=False)
    assert tracker.gap_summary() == "log_metrics at epochs 2-3"
    history = mlflow.tracking.MlflowClient().get_metric_history(tracker.run_id, "val_rmse")
    assert sorted(m.step for m in history) == [1, 4, 5]  # recorded again after the gap
    assert mlflow.get_run(tracker.run_id).info.status == "FINISHED"


def test_a_store_race_with_another_command_is_tried_again_not_left_as_a_gap(cfg, tiny_data, mlflow_uri, monkeypatch):
    """Four commands on one SQLite store: two logging the same data set at once, one insert loses
    with IntegrityError (seen in the load benchmark). The call is tried again, and the record is whole;
    an error that is not such a race still leaves its gap at once."""
    import mlflow

    from mfexp.track import tracker as tracking
    from mfexp.track.tracker import Tracker

    monkeypatch.setattr(tracking, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    real, calls = mlflow.log_inputs, []

    def loses_a_race_twice(*args, **kw):
        calls.append(1)
        if len(calls) <= 2:
            raise mlflow.exceptions.MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: "
                                                    "datasets.experiment_id, datasets.name, datasets.digest")
        return real(*args, **kw)

    monkeypatch.setattr(mlflow, "log_inputs", loses_a_race_twice)
    tracker = Tracker(cfg.tracking)
    with tracker.run(run_name="race", params={}, tags={}):
        tracker.log_datasets(tiny_data, cfg.data)
    assert tracker.gaps == [] and len(calls) == 3
    assert len(mlflow.get_run(tracker.run_id).inputs.dataset_inputs) == 3  # train, holdout, test

    def always(*args, **kw):
        calls.append(1)
        raise mlflow.exceptions.MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: x")

    monkeypatch.setattr(mlflow, "log_inputs", always)
    calls.clear()
    tracker = Tracker(cfg.tracking)
    with tracker.run(run_name="race-lost", params={}, tags={}):
        tracker.log_datasets(tiny_data, cfg.data)
    assert tracker.gaps == ["log_inputs"] and len(calls) == 4  # the first try and three more


# --- 2. a full disk --------------------------------------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(where: Path, size: str):
    """A tmpfs of `size` mounted at `where` (root only), always unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (make test in CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write zeros to folder/filler until the file system has no free page left."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        block = bytes(1 << 16)
        while True:
            os.write(fd, block)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    finally:
        os.close(fd)
    return filler


def _sweep_args(ratings, root, name, *extra):
    return ["data=file", f"data.path={ratings}", "sweep=smoke", f"sweep.name={name}", f"sweep.root={root}",
            "sweep.models=[biased]", "sweep.pruner=none", "train.patience=null", "train.epochs=40",
            "train.batch_size=choice(64)", *extra]


def _sweep_env(tracking_uri, **extra):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MXNET_CPU_WORKER_NTHREADS": "1",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for key in ("NO_PROXY", "no_proxy"):  # every server here is local, whatever proxy CI sets
        env[key] = ",".join(filter(None, [os.environ.get(key), "127.0.0.1,localhost"]))
    return env


def _read_study(root, name):
    """The study as Optuna itself reads the journal, without mfexp's repair."""
    from optuna.storages.journal import JournalFileBackend

    path = Path(root) / name / "optuna.journal"
    if not path.exists():
        return None
    try:
        return optuna.load_study(study_name=f"{name}-biased",
                                 storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))
    except KeyError:
        return None


def _complete(root, name, n=1):
    study = _read_study(root, name)
    return study is not None and sum(t.state in COUNTED for t in study.get_trials(deepcopy=False)) >= n


def _create_mlflow_store(uri):
    """Create a SQLite MLflow store once, before two processes open it (MLflow's own table
    creation races; across machines the workers share a tracking server instead)."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        fresh_mlflow_store(Path(uri[len("sqlite:///"):]))
        return
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments(max_results=1)


def _trial_runs(tracking_uri, name):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(f"mfexp-sweep-{name}")
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return client, [r for r in runs if "optuna.trial_number" in r.data.tags and "mfexp.best" not in r.data.tags]


@pytest.mark.slow
@pytest.mark.fulldisk
def test_a_sweep_folder_that_fills_stops_cleanly_and_the_same_command_resumes(tmp_path, ratings_file):
    n_trials = 5
    with small_tmpfs(tmp_path / "mnt", "4m") as mnt:
        root = mnt / "sweeps"
        uri = fresh_mlflow_store(tmp_path / "mlflow.db")
        cmd = [sys.executable, "-m", "mfexp.sweep", *_sweep_args(ratings_file, root, "full", f"sweep.n_trials={n_trials}")]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_sweep_env(uri), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: _complete(root, "full"), 300, "a complete trial", proc)
            filler = fill(mnt)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        journal_path = root / "full" / "optuna.journal"
        assert proc.returncode == 1, f"{out}\n{err}"
        assert "mfexp: error: disk full (ENOSPC) while writing " + str(journal_path) in err, err
        assert "Traceback" not in err and "Should not reach" not in err

        # Both stores still open, nothing half-written in the journal.
        assert journal.find_damage(journal_path) is None
        study = _read_study(root, "full")
        before = study.get_trials(deepcopy=False)
        assert sum(t.state in COUNTED for t in before) < n_trials
        client, runs = _trial_runs(uri, "full")
        assert len(runs) >= 1

        filler.unlink()  # space freed: the same command resumes and finishes the budget
        resumed = subprocess.run(cmd, cwd=tmp_path, env=_sweep_env(uri), capture_output=True, text=True,
                                 timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        trials = _read_study(root, "full").get_trials(deepcopy=False)
        assert [t.number for t in trials] == list(range(len(trials)))
        assert [t.params for t in trials[:len(before)]] == [t.params for t in before]  # nothing lost
        assert sum(t.state in COUNTED for t in trials) == n_trials  # none counted twice
        cut = [t for t in trials if t.state == TrialState.FAIL]
        # the trials training when the disk filled: one, or one population's (asked together: consecutive numbers)
        assert [t.number for t in cut] == list(range(cut[0].number, cut[0].number + len(cut))) if cut else True
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        _, runs = _trial_runs(uri, "full")
        assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [t.number for t in trials]
        assert (root / "full" / "report.md").exists() and not list((root / "full").glob("*.torn-*"))


def _check_gaps_are_exact(trials, client, runs):
    """Every trial's MLflow record plus what its mlflow_gap names is exactly what it ran."""
    from mfexp.track.tracker import _ranges

    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    for t in trials:
        gap = t.user_attrs.get("mlflow_gap", "")
        if t.number not in by_number:
            assert gap.startswith("the whole run"), (t.number, gap)
            continue
        epochs = list(range(1, t.user_attrs["epochs_run"] + 1))
        logged = sorted(m.step for m in client.get_metric_history(by_number[t.number].info.run_id, "val_rmse"))
        missed = [e for e in epochs if e not in logged]
        if missed:
            assert f"log_metrics at epochs {_ranges(missed)}" in gap, (t.number, gap, logged)
        else:
            assert "log_metrics at epochs" not in gap, (t.number, gap, logged)
        status = client.get_run(by_number[t.number].info.run_id).info.status
        assert (status == "RUNNING") == ("end_run" in gap), (t.number, gap, status)  # its end missed, or not


@pytest.mark.slow
@pytest.mark.fulldisk
def test_an_mlflow_store_that_fills_leaves_gaps_on_record_and_training_goes_on(tmp_path, ratings_file):
    """The decision: a full tracking store never stops a sweep (Optuna's storage is the source of
    truth); each trial says in mlflow_gap what MLflow missed, and once space is freed the next
    runs are recorded again."""
    import sqlite3

    n_trials = 4
    with small_tmpfs(tmp_path / "mnt", "8m") as mnt:
        uri = f"sqlite:///{mnt / 'mlflow.db'}"
        root = tmp_path / "sweeps"
        args = _sweep_args(ratings_file, root, "trackfull")
        env = _sweep_env(uri, MFEXP_TRACKING_RETRY_S="0")
        proc = subprocess.Popen([sys.executable, "-m", "mfexp.sweep", *args, f"sweep.n_trials={n_trials}"],
                                cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: _complete(root, "trackfull"), 300, "a complete trial", proc)
            filler = fill(mnt)
            out, err = proc.communicate(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, f"{out}\n{err}"
        assert "MLflow tracking failed" in err and "Traceback" not in err
        trials = _read_study(root, "trackfull").get_trials(deepcopy=False)
        assert sum(t.state in COUNTED for t in trials) == n_trials and len(trials) == n_trials
        assert any("mlflow_gap" in t.user_attrs for t in trials)
        client, runs = _trial_runs(uri, "trackfull")  # the store still opens, and reads
        _check_gaps_are_exact(trials, client, runs)
        with sqlite3.connect(mnt / "mlflow.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        filler.unlink()  # space freed: the next trial is recorded whole
        more = subprocess.run([sys.executable, "-m", "mfexp.sweep", *args, f"sweep.n_trials={n_trials + 1}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        assert more.returncode == 0, more.stderr[-3000:]
        last = _read_study(root, "trackfull").get_trials(deepcopy=False)[-1]
        assert "mlflow_gap" not in last.user_attrs
        client, runs = _trial_runs(uri, "trackfull")
        run = {int(r.data.tags["optuna.trial_number"]): r for r in runs}[last.number]
        assert len(client.get_metric_history(run.info.run_id, "val_rmse")) == last.user_attrs["epochs_run"]


# --- 3. Redis ----------------------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server on 127.0.0.1:<free port>, no persistence, stopped after the test."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: run tests/ensure_servers.sh (apt-get install redis-server)")
    redis = pytest.importorskip("redis", reason="the redis client is not installed: make install (redis extra)")
    port = free_port()
    log = open(tmp_path / "redis.log", "w")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        def up():
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited ({proc.returncode}): {(tmp_path / 'redis.log').read_text()[-2000:]}")
            try:
                return redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            except redis.RedisError:
                return False

        wait_for(up, 30, "redis-server to answer PING")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.redis
def test_an_unreachable_redis_storage_is_refused_naming_the_url(tmp_path):
    pytest.importorskip("redis", reason="the redis client is not installed: make install (redis extra)")
    from mfexp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cannot open sweep.storage=redis://u:\*\*\*@127.0.0.1:9/0"):
        open_storage(SweepConfig(name="r", storage="redis://u:secret@127.0.0.1:9/0"))


@pytest.mark.slow
@pytest.mark.redis
def test_two_workers_share_one_study_on_redis(redis_url, tmp_path, ratings_file):
    n_trials = 6
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = _sweep_args(ratings_file, tmp_path / "sweeps", "redis", f"sweep.n_trials={n_trials}", "train.epochs=5",
                       f"sweep.storage={redis_url}")
    _create_mlflow_store(uri)
    procs = [subprocess.Popen([sys.executable, "-m", "mfexp.sweep", *args], cwd=tmp_path, env=_sweep_env(uri),
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"{out}\n{err[-3000:]}"

    study = optuna.load_study(study_name="redis-biased", storage=open_storage(SweepConfig(name="redis", storage=redis_url)))
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))  # unique, none lost
    assert all(t.state in COUNTED for t in trials), [(t.number, t.state) for t in trials]
    assert len(trials) == n_trials  # counted and started under the sweep's Redis lock: never one more
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials} == {str(p.pid) for p in procs}
    assert sum("mfexp.reference" in t.user_attrs for t in trials) == 1  # enqueued once, under the Redis lock
    _, runs = _trial_runs(uri, "redis")
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [t.number for t in trials]


# --- 4. a tracking server that restarts ---------------------------------------------------------------

class MlflowServer:
    """`mlflow server` on 127.0.0.1:<port> over a SQLite store in `folder`; stop() and start() again
    on the same port and store, as an operator restarting it would."""

    def __init__(self, folder: Path, extra: tuple[str, ...] = (), env: dict | None = None):
        self.folder, self.extra, self.env = folder, extra, env
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log = None

    def start(self, timeout: float = 180) -> "MlflowServer":
        import urllib.request

        self.log = open(self.folder / "server.log", "a")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", *self.extra,
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True,
            env=self.env or os.environ.copy())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def healthy():
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited:\n{(self.folder / 'server.log').read_text()[-3000:]}")
            try:
                with opener.open(f"{self.uri}/health", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(healthy, timeout, "mlflow server /health")
        return self

    def stop(self) -> None:
        import signal

        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # gone at once, as a crashed server
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None
        self.log.close()


class Forwarder:
    """127.0.0.1:<port> forwarded to a backend port. down() closes it (clients get "connection
    refused") and drops the open connections; up(backend) serves again, maybe for another backend.
    A cold start of `mlflow server` takes 1-2 minutes on a busy 2-core machine, so the test brings
    the server back as a second server over the same store, started ahead, behind the same address."""

    def __init__(self, backend: int):
        self.backend, self.port = backend, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._listener = None
        self._open: list = []

    def up(self, backend: int | None = None) -> "Forwarder":
        import socket
        import threading

        self.backend = backend or self.backend
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._serve, args=(listener, self.backend), daemon=True).start()
        return self

    def down(self) -> None:
        import socket

        for sock in [self._listener, *self._open]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._open = []

    def _serve(self, listener, backend: int) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # down()
            try:
                server = socket.create_connection(("127.0.0.1", backend), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._open += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(2)
                except OSError:
                    pass


def _intermediate(root, name, number):
    study = _read_study(root, name)
    trials = study.get_trials(deepcopy=False) if study else []
    return len(trials[number].intermediate_values) if len(trials) > number else 0


@pytest.mark.slow
def test_a_tracking_server_that_goes_away_and_comes_back_is_recorded_again_with_exact_gaps(tmp_path, ratings_file):
    import threading

    folder = tmp_path / "server"
    folder.mkdir()
    _create_mlflow_store(f"sqlite:///{folder / 'mlflow.db'}")  # once, before two servers open it
    first, second = MlflowServer(folder), MlflowServer(folder)
    starting = threading.Thread(target=second.start)  # the comeback, warmed up meanwhile
    starting.start()
    first.start()
    join_all([starting], 240, "the second mlflow server's start")
    if second.proc is None or second.proc.poll() is not None:
        first.stop()
        pytest.fail(f"the second mlflow server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
    try:
        _sweep_through_an_outage(first, second, tmp_path, ratings_file)
    finally:
        first.stop()
        second.stop()


def _sweep_through_an_outage(first, second, tmp_path, ratings_file):
    proxy = Forwarder(first.port).up()
    root, n_trials = tmp_path / "sweeps", 3
    env = _sweep_env(proxy.uri, MFEXP_TRACKING_RETRY_S="0.5", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                     MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    cmd = [sys.executable, "-m", "mfexp.sweep",
           *_sweep_args(ratings_file, root, "restart", f"sweep.n_trials={n_trials}", "train.epochs=40")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _intermediate(root, "restart", 0) >= 3, 300, "trial 0 to train 3 epochs", proc)
        first.stop()  # the server goes away (SIGKILL) and its address refuses connections
        proxy.down()
        seen = _intermediate(root, "restart", 0)
        wait_for(lambda: _intermediate(root, "restart", 0) >= seen + 3, 120, "3 epochs with the server down", proc)
        proxy.up(second.port)  # and comes back, same address, same store
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        proxy.down()
    assert proc.returncode == 0, f"{out}\n{err[-3000:]}"
    assert "MLflow tracking failed" in err and "MLflow tracking is back" in err
    trials = _read_study(root, "restart").get_trials(deepcopy=False)
    assert sum(t.state in COUNTED for t in trials) == n_trials
    client, runs = _trial_runs(second.uri, "restart")
    _check_gaps_are_exact(trials, client, runs)
    gap = trials[0].user_attrs.get("mlflow_gap", "")
    assert "log_metrics at epochs" in gap  # the outage began in trial 0, mid-training
    history = sorted(m.step for m in client.get_metric_history(trials[0].user_attrs["mlflow_run_id"], "val_rmse"))
    assert history[-1] == trials[0].user_attrs["epochs_run"]  # its later epochs recorded again
    assert "mlflow_gap" not in trials[-1].user_attrs  # a trial after the comeback: recorded whole


# --- 5. a tracking server that is not open to everyone -----------------------------------------------

def _make_server(tmp_path, port, *extra, dry_run=False):
    """`make server` from this repo, run in tmp_path (its stores land there), with this venv.
    (It writes the venv's mfexp-auth.ini, with no secret in it.)"""
    venv = Path(sys.executable).parent.parent
    cmd = ["make", "-s", "-f", str(REPO / "Makefile"), *(["-n"] if dry_run else []),
           "-o", str(venv / ".installed-cpu"), "-o", str(venv / ".installed-gpu"), "server", f"VENV={venv}",
           f"PORT_SERVER={port}", f"MLFLOW_BACKEND=sqlite:///{tmp_path / 'mlflow-server.db'}",
           f"ARTIFACTS={tmp_path / 'artifacts'}", *extra]
    return [*cmd, f"AUTH_DB=sqlite:///{tmp_path / 'basic_auth.db'}"]


def test_make_server_warns_when_it_serves_beyond_this_machine_without_auth(tmp_path):
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    said = {}
    for host, auth in (("0.0.0.0", "0"), ("0.0.0.0", "1"), ("127.0.0.1", "0")):
        out = subprocess.run(_make_server(tmp_path, 5002, f"HOST={host}", f"AUTH={auth}", dry_run=True),
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        said[host, auth] = out.stderr
    assert "make server: warning: HOST=0.0.0.0 without AUTH=1" in said["0.0.0.0", "0"]
    assert said["0.0.0.0", "1"] == "" and said["127.0.0.1", "0"] == ""


@pytest.mark.slow
def test_make_server_auth_refuses_strangers_and_records_an_authenticated_worker(tmp_path, ratings_file):
    import secrets
    import shutil
    import signal
    import urllib.error
    import urllib.request

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    password = secrets.token_urlsafe(16)
    creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_AUTH_", "MLFLOW_TRACKING_"))}
    no_creds = subprocess.run(_make_server(tmp_path, free_port(), "AUTH=1"), cwd=tmp_path, env=clean,
                              capture_output=True, text=True, timeout=60)
    assert no_creds.returncode != 0 and "set the admin's credentials in the environment" in no_creds.stderr

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(_make_server(tmp_path, port, "AUTH=1", "HOST=127.0.0.1"), cwd=tmp_path,
                              env={**clean, **creds}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def status(path, auth=None):
        request = urllib.request.Request(f"{uri}{path}")
        if auth:
            import base64

            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with opener.open(request, timeout=60) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError as err:
            return f"{type(err).__name__}: {err}"

    try:
        wait_for(lambda: server.poll() is None and status("/health") == 200 or server.poll() is not None, 240,
                  "make server AUTH=1 to answer /health")
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        search = "/api/2.0/mlflow/experiments/search?max_results=1"
        assert status(search) == 401  # a stranger is refused
        assert status(search, f"admin:{password}x") == 401
        assert status(search, f"admin:{password}") == 200
        for pid in _group_pids(server.pid):  # the password is on no command line
            assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")

        root = tmp_path / "sweeps"
        worker = subprocess.run([sys.executable, "-m", "mfexp.sweep",
                                 *_sweep_args(ratings_file, root, "auth", "sweep.n_trials=2", "train.epochs=2")],
                                cwd=tmp_path, env=_sweep_env(uri, MLFLOW_HTTP_REQUEST_TIMEOUT="120", **creds),
                                capture_output=True, text=True, timeout=600)
        assert worker.returncode == 0, worker.stderr[-3000:]
        assert "MLflow tracking failed" not in worker.stderr
        with pytest.MonkeyPatch.context() as mp:  # MlflowClient reads them from the environment, as the worker did
            for key, value in creds.items():
                mp.setenv(key, value)
            _, runs = _trial_runs(uri, "auth")
        trials = _read_study(root, "auth").get_trials(deepcopy=False)
        assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [t.number for t in trials]
        stranger = subprocess.run([sys.executable, "-m", "mfexp.sweep",
                                   *_sweep_args(ratings_file, root, "auth2", "sweep.n_trials=1")],
                                  cwd=tmp_path, env=_sweep_env(uri), capture_output=True, text=True, timeout=300)
        assert stranger.returncode == 2 and "cannot use the MLflow tracking store" in stranger.stderr
        assert (tmp_path / "basic_auth.db").exists() and not list(REPO.glob("basic_auth.db"))
        assert password not in (Path(sys.executable).parent.parent / "mfexp-auth.ini").read_text()
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # make, mlflow and uvicorn: the whole group
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=30)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


@pytest.mark.parametrize("to", ["process", "another thread"])
def test_a_signal_during_a_journal_append_waits_until_the_lock_is_free(tmp_path, to):
    """Ctrl-C between taking the journal's lock and freeing it would leave the lock held for
    Optuna's 30 s grace period: the append defers SIGINT until it has released the lock. Also when
    the kernel hands the signal to another thread (MXNet's, MLflow's): Python still runs the
    handler in the main thread at once, so blocking the signal in the main thread is not enough."""
    import os
    import signal
    import threading
    import time

    from mfexp.sweep.journal import SafeJournalFileBackend

    path = tmp_path / "optuna.journal"
    path.touch()
    backend = SafeJournalFileBackend(str(path))
    acquire = backend._append_lock.acquire
    done = threading.Event()
    other = threading.Thread(target=done.wait, daemon=True)
    other.start()

    def acquire_then_interrupt():
        got = acquire()
        if to == "process":
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the lock is held
        else:
            signal.pthread_kill(other.ident, signal.SIGINT)
            time.sleep(0.2)  # the main thread runs Python's handler at its next bytecodes
        return got

    backend._append_lock.acquire = acquire_then_interrupt
    # as from a terminal: a test run started in the background of a script inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            backend.append_logs([{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}])
    finally:
        signal.signal(signal.SIGINT, previous)
        done.set()
    assert not os.path.lexists(f"{path}.lock")  # released before the interrupt was delivered
    assert path.read_text().count("\n") == 1  # and the record is whole


def test_a_call_the_store_carried_out_whose_answer_was_lost_is_not_counted_as_missed(cfg, tiny_data, mlflow_uri,
                                                                                    monkeypatch):
    """The server went away just after recording epoch 2's metrics: the client saw an error. When
    the store answers again, the tracker asks it which missed epochs it has: the gap names 3 only."""
    import mlflow

    from mfexp.experiment import train_and_track
    from mfexp.track.tracker import Tracker

    monkeypatch.setenv("MFEXP_TRACKING_RETRY_S", "0")
    real = mlflow.log_metrics

    def answer_lost_at_2_down_at_3(metrics, step=None, **kw):
        if step == 2:
            real(metrics, step=step, **kw)  # carried out, but the answer never came back
            raise mlflow.exceptions.MlflowException("Connection aborted: RemoteDisconnected")
        if step == 3:
            raise mlflow.exceptions.MlflowException("Connection refused")
        return real(metrics, step=step, **kw)

    monkeypatch.setattr(mlflow, "log_metrics", answer_lost_at_2_down_at_3)
    cfg.train.epochs, cfg.train.patience = 5, None
    tracker = Tracker(cfg.tracking)
    with tracker.run(run_name="lost", params={}, tags={}):
        train_and_track(cfg, tiny_data, tracker, eval_test=False, final_test=False)
    assert tracker.gap_summary() == "log_metrics at epochs 3"
    history = mlflow.tracking.MlflowClient().get_metric_history(tracker.run_id, "val_rmse")
    assert sorted(m.step for m in history) == [1, 2, 4, 5]
