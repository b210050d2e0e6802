"""In CI a test that proves a README claim about PostgreSQL, Redis or a full disk never skips
(tests/ci_backends.py); nor does tests/ensure_servers.sh pass when it cannot install the servers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

INNER = '''
import pytest

@pytest.fixture
def server():
    pytest.skip("initdb not found")  # skipped in a fixture, as tests/pg.py does

@pytest.mark.postgres
def test_needs_postgres(server):
    pass

@pytest.mark.redis
def test_needs_redis():
    pytest.skip("redis-server is not installed")

@pytest.mark.fulldisk
def test_needs_a_full_disk():
    pytest.skip("mounting a tmpfs needs root")

def test_needs_nothing_the_readme_claims():
    pytest.skip("not a backend")

@pytest.mark.redis
def test_redis_here():
    pass
'''


def _inner_pytest(tmp_path, ci):
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({"PYTHONPATH": str(TESTS)} if ci is None else {"PYTHONPATH": str(TESTS), "CI": ci})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_backends", "-p", "no:cacheprovider", "-q", "-rfEs",
                           "-W", "ignore::pytest.PytestUnknownMarkWarning", "test_inner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", ["1", "true"])
def test_in_ci_a_skipped_backend_test_fails_saying_what_is_missing(tmp_path, ci):
    out = _inner_pytest(tmp_path, ci)
    assert out.returncode == 1, out.stdout
    assert "2 failed, 1 passed, 1 skipped, 1 error" in out.stdout, out.stdout  # error: skipped in its fixture
    for test, backend, why in (("ERROR test_inner.py::test_needs_postgres", "PostgreSQL", "initdb not found"),
                               ("FAILED test_inner.py::test_needs_redis", "Redis", "redis-server is not installed"),
                               ("FAILED test_inner.py::test_needs_a_full_disk", "a full disk",
                                "mounting a tmpfs needs root")):
        line = next(line for line in out.stdout.splitlines() if line.startswith(test))
        assert f"the README's claim about {backend}" in line and why in line and f"CI={ci}" in line, line
    assert "SKIPPED [1] test_inner.py:" in out.stdout and "not a backend" in out.stdout  # no claim: skips


@pytest.mark.parametrize("ci", [None, "0", "false"])
def test_off_ci_a_backend_test_that_cannot_run_skips(tmp_path, ci):
    out = _inner_pytest(tmp_path, ci)
    assert out.returncode == 0, out.stdout
    assert "1 passed, 4 skipped" in out.stdout, out.stdout


def _ensure_servers(tmp_path, ci):
    """tests/ensure_servers.sh on a PATH with neither redis-server nor apt-get (so it can install
    nothing); PostgreSQL may be installed or not."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ls", "id", "mktemp", "tail", "rm"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), **({} if ci is None else {"CI": ci})}
    return subprocess.run(["/bin/bash", str(TESTS / "ensure_servers.sh")], env=env, capture_output=True, text=True,
                          timeout=60)


def test_ensure_servers_fails_in_ci_when_it_cannot_install_and_says_what_to_do(tmp_path):
    out = _ensure_servers(tmp_path, "1")
    assert out.returncode == 1, out.stderr
    assert "redis-server not installed and apt-get is not available" in out.stderr
    assert "CI=1" in out.stderr and "fails the build" in out.stderr


@pytest.mark.parametrize("ci", [None, "false"])
def test_ensure_servers_off_ci_says_what_is_missing_and_lets_the_tests_skip(tmp_path, ci):
    out = _ensure_servers(tmp_path, ci)
    assert out.returncode == 0, out.stderr
    assert "redis-server not installed and apt-get is not available" in out.stderr
