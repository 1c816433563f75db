#!/usr/bin/env sh
# The quick benchmark (python -m bench --quick: the poll, start/stop, start-after-listen and cold-start
# comparisons, under three minutes), for whoever changes the hot path: outpost.store, outpost.routes,
# outpost.lifecycle (start, stop, poll), outpost.redis_client, outpost.auth, outpost.ratelimit. Installs
# wrk (Debian package) when it is missing and this runs as root; without it the Python load generator is
# used and the table says so. Prints the ratios; asserts nothing (docs/performance.md keeps the history).
#
#     sh tools/bench.sh [more python -m bench options]
set -eu
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing wrk" >&2
        apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else
        echo "bench: no wrk (needs apt-get as root); the Python load generator is used" >&2
    fi
fi
[ -x .venv/bin/python ] || sh tools/install.sh test
exec .venv/bin/python -m bench --quick "$@"
