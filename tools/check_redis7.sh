#!/usr/bin/env sh
# The other side of redis-py's 8.0 release: pyproject.toml's range lets people install redis-py 7, whose
# client is typed differently (a command is `Awaitable[T] | T`). This type-checks the code and runs the
# Redis-facing unit tests (the store and the client) with the newest redis-py 7 and everything else as
# uv.lock pins it, in .venv-redis7 (.ci/run calls it after its mypy step; seconds with a warm uv cache):
#
#     sh tools/check_redis7.sh
set -eu

REDIS_PY_7=7.4.1  # the newest 7.x
cd "$(dirname "$0")/.."
venv=.venv-redis7
sh tools/install.sh --uv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# No hashes: the lock has none for the redis-py it does not pin.
.venv/bin/uv export --frozen --quiet --extra test --no-hashes --no-emit-project --no-header \
    | sed "s/^redis==[^ ;]*/redis==$REDIS_PY_7/" > "$venv/requirements.txt"
.venv/bin/uv pip sync --quiet --python "$venv/bin/python" "$venv/requirements.txt"
.venv/bin/uv pip install --quiet --python "$venv/bin/python" --no-deps -e .
"$venv/bin/python" -c "import redis; assert redis.__version__ == '$REDIS_PY_7', redis.__version__"
# Its own mypy cache, seeded from .venv's run (.ci/run's mypy step): mypy rechecks what redis-py 7 changes
# and everything that imports it, and reuses the rest (about 4 s instead of 25 s from nothing).
if [ ! -d .mypy_cache/redis7 ]; then
    mkdir -p .mypy_cache/redis7
    for cache in .mypy_cache/3.*; do [ -d "$cache" ] && cp -R "$cache" .mypy_cache/redis7/; done
fi
"$venv/bin/mypy" --cache-dir .mypy_cache/redis7
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests/store tests/lib/test_redis_client.py
