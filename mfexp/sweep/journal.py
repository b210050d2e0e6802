"""The sweep's journal file (Optuna's JournalFileBackend), safe at its edges: a write that fails
leaves nothing half-written, and a journal torn by a worker killed mid-write is repaired.

How Optuna 5 reads the file (optuna/storages/journal/_file.py, read in 5.0.0 and 5.1.0; the
torn-journal tests in tests/test_edges.py run against the installed Optuna and fail if it changes): one JSON
record per line; a last line without its newline is skipped as "still being written"; a line
that does not parse is skipped too when it is the last one, and raises (JSONDecodeError or
"Invalid log format") as soon as another line follows it. A writer appends under a lock
(a symlink `<file>.lock`) and reads its own record back.

So a write cut short (kill -9, or the disk filling: write() stores what fits and then fails)
leaves a partial last line that everybody ignores, until the next append lands straight after
it: `{"op_code":5,"work{"op_code":4,...}`. From then on every start of the sweep fails. Nothing
from the damage on was ever applied by any process (readers stop there, and the writers of
those records saw their operation fail), so the repair keeps every complete record before the
damage, moves the damaged file aside (`optuna.journal.torn-<time>`, kept whole), rewrites the
clean prefix atomically (write a copy, then rename over the journal) and says on stderr what it
skipped. A journal whose very first record cannot be read is not torn but foreign or damaged from
its start: it holds no history to keep, and "repairing" it would silently start the sweep over, so
it is refused (DataError, exit 2) and left exactly as it is. `SafeJournalFileBackend` prevents the full-disk case outright: a failed append truncates
the file back to where it started and raises DiskFull naming the file.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from mfexp import interrupt
from mfexp.errors import DataError, disk_full

RECORD_START = b'{"op_code":'  # how Optuna 5 writes every record (json.dumps, separators=(",", ":"))


class SafeJournalFileBackend(JournalFileBackend):
    """Optuna's JournalFileBackend whose appends are all or nothing (same format, same lock)."""

    def __init__(self, file_path: str) -> None:
        self._path = file_path
        self._append_lock = JournalFileSymlinkLock(file_path)
        super().__init__(file_path, lock_obj=self._append_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with interrupt.deferred():  # Ctrl-C / SIGTERM between taking the lock and freeing it would
            self._append(logs)     # leave it held, and the next write (marking the trial FAIL)
                                   # would wait out Optuna's 30 s grace period

    def _append(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        try:
            self._append_lock.acquire()  # a symlink: on a full disk its creation can fail too
        except OSError as err:
            raise disk_full(err, f"{self._path}.lock") or err
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
            try:
                start = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:  # write() may store part of it (a full disk), then fail
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as err:
                    os.ftruncate(fd, start)  # never leave a partial record behind
                    raise disk_full(err, self._path) or err
            finally:
                os.close(fd)
        finally:
            self._append_lock.release()


@dataclass
class Damage:
    good_bytes: int     # the clean prefix: complete records only
    good_records: int
    skipped_bytes: int
    skipped_records: int  # record starts from the damage on (partial ones included)


def find_damage(path: Path) -> Optional[Damage]:
    """Where the journal stops being a sequence of complete records, or None when it is clean."""
    good_bytes = good_records = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n") or not _is_record(line):
                break
            good_bytes += len(line)
            good_records += 1
        else:
            return None
        f.seek(good_bytes)
        skipped = skipped_records = 0
        for chunk in iter(lambda: f.read(1 << 20), b""):
            skipped += len(chunk)
            skipped_records += chunk.count(RECORD_START)  # a token cut by the chunk edge is missed: rare, only a count
    return Damage(good_bytes, good_records, skipped, max(skipped_records, 1))


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return False
    return isinstance(record, dict) and "op_code" in record


def repair(path: Path) -> Optional[Path]:
    """Repair a torn journal (see the module's doc); returns where the damaged file was kept, or None
    when the journal was clean. Holds the journal's own lock, so no append is in progress: a
    partial last line found then is a dead writer's, not one still being written. Raises DataError,
    touching nothing, when not even the first record can be read."""
    if not path.exists() or find_damage(path) is None:
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()  # a writer killed holding it: Optuna frees it after its grace period (30 s)
    try:
        damage = find_damage(path)
        if damage is None:
            return None  # it was a live write, now finished, or another process repaired it
        if damage.good_records == 0:
            raise unreadable(path)
        torn = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        _rewrite_prefix(path, damage.good_bytes, torn)
    finally:
        lock.release()
    print(f"mfexp: warning: the journal {path} was torn (a worker stopped in the middle of a write, or the "
          f"disk filled): kept its first {damage.good_records} complete records ({damage.good_bytes} bytes); "
          f"skipped the {damage.skipped_bytes} bytes after them ({damage.skipped_records} partial or unapplied "
          f"record(s), which no process had read). The damaged file is kept as {torn}. Resuming.",
          file=sys.stderr, flush=True)
    return torn


def unreadable(path: Path) -> DataError:
    with open(path, "rb") as f:
        start = f.read(len(RECORD_START))
    what = ("holds an Optuna record cut short and nothing before it" if start == RECORD_START else
            "does not start with an Optuna journal record")
    return DataError(f"the sweep's journal {path} cannot be read from its first record: line 1 {what}, so it "
                     "holds no trial to resume from. mfexp left it as it is. If it is this sweep's journal and "
                     f"you want to start the sweep over, move it away (mv {path} {path}.bad) and run the same "
                     "command again; otherwise give the sweep another sweep.name or sweep.root.")


def _rewrite_prefix(path: Path, size: int, torn: Path) -> None:
    tmp = path.with_name(f"{path.name}.repair-{os.getpid()}")
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            left = size
            while left:
                chunk = src.read(min(left, 1 << 20))
                dst.write(chunk)
                left -= len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.link(path, torn)  # the damaged file, whole, under its new name (costs no space)
        os.replace(tmp, path)  # atomic: readers see the old file or the clean one, never neither
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise disk_full(err, tmp) or err
