#!/usr/bin/env bash
# Called by `make test` before pytest: tests start throwaway servers and need their binaries:
# PostgreSQL (tests/test_scale_out.py, tests/test_edges.py: /usr/lib/postgresql/*/bin/initdb) and
# Redis (tests/test_edges.py: redis-server). Installs the Debian packages `postgresql` and
# `redis-server` when they are missing. Never fails the build itself: when it cannot install, it
# says why; the tests that need them then skip (PostgreSQL's fail in CI, CI set).
set -u
say() { echo "ensure_servers: $*" >&2; }
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "${missing[*]} not installed and apt-get is not available: install them yourself to run" \
        "the multi-worker and storage tests."
    exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        say "${missing[*]} not installed and this user cannot run apt-get (not root, no passwordless" \
            "sudo): run 'sudo apt-get install -y ${missing[*]}' to run the multi-worker and storage tests."
        exit 0
    fi
fi
say "installing ${missing[*]} (apt-get install) for the multi-worker and storage tests..."
log=$(mktemp)
started=$SECONDS
if "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
   "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       "${missing[@]}" >>"$log" 2>&1; then
    say "${missing[*]} installed in $((SECONDS - started))s"
else
    say "apt-get install ${missing[*]} failed; its last lines:"
    tail -n 15 "$log" >&2
fi
rm -f "$log"
exit 0
