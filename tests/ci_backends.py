"""In CI a README claim about a backend is tested or the build fails.

A test marked `postgres`, `redis` or `fulldisk` proves what the README says of that backend. Off
CI it skips, saying why, when the backend cannot be had here (not installed, not root). In CI (CI
set, as .ci/run and GitHub do) such a skip becomes a failure that says what is missing and what
to do: CI going green while the claim went untested would say nothing. conftest.py registers the
hook; tests/ensure_servers.sh fails the same way when it cannot install the servers in CI.
"""
from __future__ import annotations

import os

import pytest

BACKENDS = {"postgres": "PostgreSQL", "redis": "Redis", "fulldisk": "a full disk (a small tmpfs mounted as root)"}


def in_ci() -> bool:
    """CI is set to anything but empty, 0, false, no or off (.ci/run sets CI=1, GitHub CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or not in_ci():
        return
    needs = [BACKENDS[mark.name] for mark in item.iter_markers() if mark.name in BACKENDS]
    if needs:
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} tests the README's claim about {needs[0]} and was skipped ({why}); "
                           f"in CI (CI={os.environ['CI']}) that fails the build. Run the tests as root through "
                           "`make test`, which installs PostgreSQL and Redis (tests/ensure_servers.sh), or unset CI "
                           "to let such tests skip on a machine that cannot run them.")
