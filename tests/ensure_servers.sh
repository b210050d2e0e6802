#!/usr/bin/env bash
# Called by `make test` before pytest: tests start throwaway servers and need their binaries:
# PostgreSQL (tests/test_scale_out.py, tests/test_bench.py: /usr/lib/postgresql/*/bin/initdb) and
# Redis (tests/test_edges.py: redis-server). Installs the Debian packages `postgresql` and
# `redis-server` when they are missing. Off CI it never fails the build: when it cannot install,
# it says why and the tests that need them skip. In CI (CI set, as .ci/run and GitHub do) it
# fails instead, as those tests would (tests/ci_backends.py): the README claims both backends work.
set -u
say() { echo "ensure_servers: $*" >&2; }
ci=${CI:-}
case "${ci,,}" in
    "" | 0 | false | no | off) ci= ;;
    *) ci=1 ;;
esac
# what the tests cannot do without: off CI, the tests that need it skip; in CI, the build fails
give_up() {
    say "$*"
    if [ -n "$ci" ]; then
        say "CI=$CI: the PostgreSQL, Redis and full-disk tests must run in CI, so this fails the build."
        exit 1
    fi
    exit 0
}
missing() {
    local out=()
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || out+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || out+=(redis-server)
    echo "${out[*]}"
}
if [ -n "$ci" ] && [ "$(id -u)" != 0 ]; then
    give_up "the full-disk tests mount a tmpfs, which needs root: run make test as root in CI."
fi
todo=$(missing)
if [ -z "$todo" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    give_up "$todo not installed and apt-get is not available: install them yourself to run the" \
        "multi-worker and storage tests."
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        give_up "$todo not installed and this user cannot run apt-get (not root, no passwordless sudo):" \
            "run 'sudo apt-get install -y $todo' to run the multi-worker and storage tests."
    fi
fi
say "installing $todo (apt-get install) for the multi-worker and storage tests..."
log=$(mktemp)
started=$SECONDS
# shellcheck disable=SC2086 # $todo: one package name per word
if "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
   "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       $todo >>"$log" 2>&1; then
    say "$todo installed in $((SECONDS - started))s"
else
    say "apt-get install $todo failed; its last lines:"
    tail -n 15 "$log" >&2
fi
rm -f "$log"
left=$(missing)
if [ -n "$left" ]; then
    give_up "$left still not installed after apt-get: the tests that need it cannot run."
fi
exit 0
