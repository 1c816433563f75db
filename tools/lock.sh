#!/usr/bin/env sh
# Refresh uv.lock to the newest versions pyproject.toml's ranges allow, then install them into .venv
# (docs/development.md says what to run next). Pass a package name to upgrade only that one:
#
#     sh tools/lock.sh              # everything
#     sh tools/lock.sh redis        # redis alone
set -eu

cd "$(dirname "$0")/.."
sh tools/install.sh --uv
if [ $# -gt 0 ]; then
    .venv/bin/uv lock --upgrade-package "$1"
else
    .venv/bin/uv lock --upgrade
fi
sh tools/install.sh test
