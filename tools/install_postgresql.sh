#!/usr/bin/env sh
# Install Debian's PostgreSQL server, for the test of `outpost import-upstream` against a real
# PostgreSQL (tests/cli/test_upstream_import.py starts a throwaway cluster of its own with initdb and
# pg_ctl, as an unprivileged user, on a free port). Needs apt-get and root; without them the test is
# skipped with the reason.
#
#     sh tools/install_postgresql.sh
#
# Idempotent: an installed server is left alone. No cluster is created and none is started: the
# package's main cluster is turned off (createcluster.conf) before the server is installed.
set -eu

found() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
found && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_postgresql: cannot install postgresql (needs apt-get as root); its import test is skipped" >&2
    exit 0
fi
echo "install_postgresql: apt-get update" >&2
apt-get update -qq
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends postgresql-common >&2
conf=/etc/postgresql-common/createcluster.conf
if grep -q '^#* *create_main_cluster' "$conf" 2>/dev/null; then
    sed -i 's/^#* *create_main_cluster.*/create_main_cluster = false/' "$conf"
else
    echo 'create_main_cluster = false' >> "$conf"
fi
echo "install_postgresql: installing postgresql" >&2
apt-get install -y -qq --no-install-recommends postgresql >&2 || true
found || echo "install_postgresql: postgresql did not install; its import test is skipped" >&2
