"""A throwaway PostgreSQL cluster for the tests that need a real database server.

`postgres_server` (session): initdb + pg_ctl in a fresh folder under /tmp, listening on
127.0.0.1:<free port> with its unix socket in that folder, trust authentication, fsync off;
always stopped (and the folder removed) at the end. `pg_database` is a function that creates a
fresh database and returns its URL. Import the fixtures into a test module:

    from pg import pg_database, postgres_server  # noqa: F401

Without PostgreSQL installed the tests skip, except in CI (CI set), where they fail: CI installs
it (tests/ensure_servers.sh, run by `make test`), so a missing server means a broken set-up
(tests/ci_backends.py does the same for every test marked postgres).

The cluster itself is ops/pgserver.py (the load benchmark starts one too); this module adds
the fixtures and turns its errors into test failures.
The URL is postgresql://: SQLAlchemy 2.1 reads it with psycopg 3 (the `postgres` extra).
"""
from __future__ import annotations

import uuid

import pytest
from ci_backends import in_ci

from ops.pgserver import (NOT_INSTALLED, START_TIMEOUT_S, PostgresError, PostgresServer,  # noqa: F401
                            find_bindir, free_port, start, stop)


def require_bindir():
    """The PostgreSQL binaries; skip without them, or fail in CI, where they must be installed."""
    bindir = find_bindir()
    if bindir is None:
        if in_ci():
            pytest.fail(f"{NOT_INSTALLED}; in CI it must be installed, `make test` does it")
        pytest.skip(NOT_INSTALLED)
    return bindir


@pytest.fixture(scope="session")
def postgres_server():
    bindir = require_bindir()
    try:
        server = start(bindir)
    except PostgresError as err:
        pytest.fail(str(err))
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture
def pg_database(postgres_server):
    """A function that creates a fresh, empty database and returns its URL."""
    def create(prefix: str = "db") -> str:
        return postgres_server.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")
    return create
