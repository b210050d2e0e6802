"""A throwaway PostgreSQL cluster for the tests that need a real database server.

`postgres_server` (session): initdb + pg_ctl in a fresh folder under /tmp, listening on
127.0.0.1:<free port> with its unix socket in that folder, trust authentication, fsync off;
always stopped (and the folder removed) at the end. `pg_database` is a function that creates a
fresh database and returns its URL. Import the fixtures into a test module:

    from pg import pg_database, postgres_server  # noqa: F401

Without PostgreSQL installed the tests skip, except in CI (CI set), where they fail: CI installs
it (tests/ensure_servers.sh, run by `make test`), so a missing server means a broken set-up.

The URL is postgresql://: SQLAlchemy 2.1 reads it with psycopg 3 (the `postgres` extra).
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

START_TIMEOUT_S = 60


def find_bindir() -> Optional[Path]:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl, or the one on PATH."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        folder = Path(initdb).parent
        version = folder.parent.name
        if (folder / "pg_ctl").exists():
            found.append((int(version) if version.isdigit() else 0, folder))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    as_user: list[str]  # prefix that runs a command as the cluster's owner ([] when not root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pg_ctl(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                              capture_output=True, text=True, timeout=timeout)


def _start(bindir: Path) -> PostgresServer:
    root = Path(tempfile.mkdtemp(prefix="mfexp-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: the cluster belongs to `postgres`
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root, but there is no 'postgres' user to own the test cluster "
                        "(the Debian package postgresql creates it)")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o700)
    server = PostgresServer(bindir, root, 0, as_user)
    init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(server.data), "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed ({init.returncode}): {init.stderr.strip()[-2000:]}")
    for _attempt in range(3):  # a free port can be taken between picking it and binding it
        server.port = free_port()
        options = (f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        started = server.pg_ctl("-l", str(server.log), "-w", "-t", str(START_TIMEOUT_S), "-o", options, "start")
        if started.returncode == 0:
            return server
    log = server.log.read_text()[-2000:] if server.log.exists() else ""
    _stop(server)
    pytest.fail(f"pg_ctl start failed: {started.stderr.strip()[-1000:]}\n{log}")


def _stop(server: PostgresServer) -> None:
    try:
        if (server.data / "postmaster.pid").exists():
            server.pg_ctl("-m", "immediate", "-w", "stop", timeout=60)
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    bindir = find_bindir()
    if bindir is None:
        why = ("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
               "run tests/ensure_servers.sh (apt-get install postgresql)")
        if os.environ.get("CI"):
            pytest.fail(f"{why}; in CI it must be installed, `make test` does it")
        pytest.skip(why)
    server = _start(bindir)
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture
def pg_database(postgres_server):
    """A function that creates a fresh, empty database and returns its URL."""
    def create(prefix: str = "db") -> str:
        return postgres_server.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")
    return create


def wait_until(predicate, timeout: float, every: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
