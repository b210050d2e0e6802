#!/usr/bin/env bash
# Called by `make test` before pytest: the multi-worker tests (tests/test_scale_out.py) start a
# throwaway PostgreSQL cluster and need the server binaries (/usr/lib/postgresql/*/bin/initdb).
# Installs the Debian package `postgresql` when they are missing. Never fails the build itself:
# when it cannot install, it says why; the PostgreSQL tests then skip, or fail in CI (CI set).
set -u
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
say() { echo "ensure_postgres: $*" >&2; }
if ! command -v apt-get >/dev/null 2>&1; then
    say "PostgreSQL is not installed and apt-get is not available: install PostgreSQL's server" \
        "package yourself (initdb and pg_ctl) to run the multi-worker tests."
    exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        say "PostgreSQL is not installed and this user cannot run apt-get (not root, no passwordless" \
            "sudo): run 'sudo apt-get install -y postgresql' to run the multi-worker tests."
        exit 0
    fi
fi
say "installing PostgreSQL (apt-get install postgresql) for the multi-worker tests..."
log=$(mktemp)
started=$SECONDS
if "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
   "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       postgresql >>"$log" 2>&1; then
    say "PostgreSQL installed in $((SECONDS - started))s"
else
    say "apt-get install postgresql failed; its last lines:"
    tail -n 15 "$log" >&2
fi
rm -f "$log"
exit 0
