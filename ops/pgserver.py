"""A throwaway PostgreSQL cluster: initdb + pg_ctl in a fresh folder under /tmp, listening on
127.0.0.1:<free port> with its unix socket in that folder, trust authentication, fsync off;
stop() removes it. Shared by the tests (tests/pg.py wraps it in pytest fixtures) and the load
benchmark (ops/load.py); imports neither pytest nor anything of mfexp.

    bindir = find_bindir()           # None: PostgreSQL is not installed
    server = start(bindir)           # raises PostgresError when it cannot start
    url = server.create_database("optuna_x")
    ...
    stop(server)

The URL is postgresql://: SQLAlchemy 2.1 reads it with psycopg 3 (mfexp's `postgres` extra).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import psycopg

START_TIMEOUT_S = 60
NOT_INSTALLED = ("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb and pg_ctl on "
                 "PATH): run tests/ensure_servers.sh (apt-get install postgresql)")


class PostgresError(RuntimeError):
    """The throwaway cluster could not be created or started."""


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

    def connect(self, db: str = "postgres"):
        return psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname={db}",
                               autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def database_size(self, name: str) -> int:
        """pg_database_size(name) in bytes: tables, indexes and TOAST of that database."""
        with self.connect() as conn:
            return int(conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0])

    def pg_ctl(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                              capture_output=True, text=True, timeout=timeout)


def start(bindir: Path, max_connections: int = 200) -> PostgresServer:
    """A new cluster in a fresh folder, started; PostgresError (with the reason) when that fails."""
    root = Path(tempfile.mkdtemp(prefix="mfexp-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: the cluster belongs to `postgres`

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresError("running as root, but there is no 'postgres' user to own the throwaway "
                                "cluster (the Debian package postgresql creates it)") from None
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o700)
    server = PostgresServer(bindir, root, 0, as_user)
    init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(server.data), "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresError(f"initdb failed ({init.returncode}): {init.stderr.strip()[-2000:]}")
    for _attempt in range(3):  # a free port can be taken between picking it and binding it
        server.port = free_port()
        options = (f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={max_connections}")
        started = server.pg_ctl("-l", str(server.log), "-w", "-t", str(START_TIMEOUT_S), "-o", options, "start")
        if started.returncode == 0:
            return server
    log = server.log.read_text()[-2000:] if server.log.exists() else ""
    stop(server)
    raise PostgresError(f"pg_ctl start failed: {started.stderr.strip()[-1000:]}\n{log}")


def stop(server: PostgresServer) -> None:
    """Stop the cluster at once (-m immediate: it is thrown away) and remove its folder."""
    try:
        if (server.data / "postmaster.pid").exists():
            server.pg_ctl("-m", "immediate", "-w", "stop", timeout=60)
    finally:
        shutil.rmtree(server.root, ignore_errors=True)
