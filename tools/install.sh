#!/usr/bin/env sh
# Install the project into .venv from uv.lock, exactly the versions (and hashes) the lock names:
#
#     sh tools/install.sh dev     # what `outpost dev` needs (the README's first command)
#     sh tools/install.sh test    # every test dependency (.ci/run)
#     sh tools/install.sh         # the runtime alone (what the images run)
#     sh tools/install.sh --uv    # only the pinned uv (tools/lock.sh)
#
# Stops with one line when uv.lock is out of date with pyproject.toml (refresh: sh tools/lock.sh).
# uv is pinned here because its lock format and resolver are part of what the lock means.
set -eu

UV_VERSION=0.13.10
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
if [ "$(.venv/bin/uv --version 2>/dev/null)" != "uv $UV_VERSION" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
[ "${1:-}" = --uv ] && exit 0
if ! .venv/bin/uv lock --check --offline --quiet 2>/dev/null; then
    echo "uv.lock is out of date with pyproject.toml: run 'sh tools/lock.sh' and commit uv.lock" >&2
    exit 1
fi
# --inexact: keep uv itself (installed by pip above, not named by the lock).
if [ $# -gt 0 ]; then
    .venv/bin/uv sync --locked --inexact --extra "$1"
else
    .venv/bin/uv sync --locked --inexact
fi
