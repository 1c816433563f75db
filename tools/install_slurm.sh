#!/usr/bin/env sh
# Install Debian's Slurm (slurmctld, slurmd, the clients, slurmrestd with its JWT plugin) and munge for
# the Slurm backend's tests (tests/slurm) and docs/hpc.md's tutorial. Needs apt-get and root; without
# them the Slurm tests are skipped with the reason. No service is started (tools/slurm_single_node.py
# runs private daemons).
#
#     sh tools/install_slurm.sh
set -eu

command -v slurmrestd >/dev/null 2>&1 && [ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so ] && exit 0
command -v slurmrestd >/dev/null 2>&1 && ls /usr/lib/*/slurm-wlm/auth_jwt.so >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_slurm: cannot install Slurm (needs apt-get as root); the Slurm tests are skipped" >&2
    exit 0
fi
echo "install_slurm: installing slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin munge" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin munge >&2 || true
