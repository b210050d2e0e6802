"""Nothing lost at the edges: a torn journal, a full disk, Redis storage, a tracking server that
restarts, one test evaluation per sweep across worker commands, an authenticated tracking server.

Each case runs against the real component, started by the test: a tmpfs mounted and filled
(root only), a redis-server and an `mlflow server` on 127.0.0.1 on free ports, a throwaway
PostgreSQL (tests/pg.py). A case whose component cannot be had here skips and says why."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mfexp.config import SweepConfig
from mfexp.errors import DiskFull
from mfexp.sweep import journal
from mfexp.sweep.storage import open_storage, sweep_dir

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


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
