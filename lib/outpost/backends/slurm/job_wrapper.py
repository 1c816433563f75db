"""What a job runs on its compute node before the server: take a free port, report it with the start's secret's
hmac in the job's comment (through the node's own `scontrol`: nothing on the node reaches the hub or the
outpost), then become the server. Standard library only: the batch script embeds this file, and the node's
Python runs it (`c.SlurmBackend.python`).

The outpost passes, in the job's environment: OUTPOST_START_SECRET, OUTPOST_JOB_COMMENT (the comment to
extend) and OUTPOST_SERVER_ARGV (JSON list). None of the three reaches the server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys


def port_mac(secret: str, job_id: int, port: int) -> str:
    """What the job writes beside its port: only a holder of the start's secret can write it."""
    return hmac.new(secret.encode(), f"{job_id}:{port}".encode(), hashlib.sha256).hexdigest()[:32]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    job_id = int(os.environ["SLURM_JOB_ID"])
    secret = os.environ.pop("OUTPOST_START_SECRET")
    comment = os.environ.pop("OUTPOST_JOB_COMMENT")
    argv = json.loads(os.environ.pop("OUTPOST_SERVER_ARGV"))
    port = free_port()
    reported = f"{comment};port={port};mac={port_mac(secret, job_id, port)}"
    result = subprocess.run(["scontrol", "update", f"JobId={job_id}", f"Comment={reported}"], check=False)
    if result.returncode:
        print(f"outpost: could not report the server's port through scontrol (exit {result.returncode})")
        sys.exit(97)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    os.environ["JUPYTERHUB_SERVICE_URL"] = f"http://0.0.0.0:{port}{prefix}"
    print(f"outpost: server on port {port} of {socket.gethostname()}", flush=True)
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"outpost: cannot start {argv[0]!r}: {exc.strerror}")
        sys.exit(127)


if __name__ == "__main__":
    main()
