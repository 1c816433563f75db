#!/usr/bin/env sh
# Install configurable-http-proxy (JupyterHub's proxy) from npm into .ci/node/ (gitignored),
# so the end-to-end tests (tests/e2e) can run it from a clean checkout. Needs node >= 20 and npm.
#
#     sh tools/install_chp.sh          # prints the path of the installed executable
#
# Idempotent: an installed copy of the pinned version is reused. Override the version with
# CHP_VERSION=..., the target directory with CHP_PREFIX=... (the tests look in .ci/node only).
set -eu

CHP_VERSION="${CHP_VERSION:-5.3.0}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${CHP_PREFIX:-$REPO/.ci/node}"
BIN="$PREFIX/node_modules/.bin/configurable-http-proxy"

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install_chp: '$tool' not found; install Node.js >= 20" >&2; exit 1; }
done

installed="$(node -p "require('$PREFIX/node_modules/configurable-http-proxy/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$CHP_VERSION" ] || [ ! -x "$BIN" ]; then
    mkdir -p "$PREFIX"
    # --prefix keeps node_modules inside .ci/node; no package.json is written (--no-save).
    npm install --prefix "$PREFIX" --no-save --no-audit --no-fund --loglevel=error \
        "configurable-http-proxy@$CHP_VERSION" >&2
fi

"$BIN" --version >/dev/null
echo "$BIN"
