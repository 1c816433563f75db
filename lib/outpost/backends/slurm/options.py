"""`c.SlurmBackend.*`: the Slurm backend's options, set in `outpost_config.py` like the other backends'."""

from __future__ import annotations

import os

from traitlets import Callable, Dict, Float, List, Unicode, Union
from traitlets.config import Configurable


class SlurmBackend(Configurable):
    """Options of the Slurm backend; a hub's `misc` may override only those its policy allows and never the
    administrator's (`ADMIN_ONLY`)."""

    rest_url = Unicode(
        "",
        help="slurmrestd's base URL (http://host:6820); empty: the Slurm commands (sbatch, squeue, scancel, "
        "scontrol, sacct) on PATH, which honour SLURM_CONF",
    ).tag(config=True)
    rest_token = Unicode(
        os.environ.get("SLURM_JWT", ""),
        help="JWT for slurmrestd (scontrol token username=slurm): a token of SlurmUser or root, since jobs are "
        "submitted as job_user. Default: $SLURM_JWT",
    ).tag(config=True)
    rest_user = Unicode("slurm", help="The user rest_token was made for (X-SLURM-USER-NAME of updates)").tag(
        config=True
    )
    rest_api = Unicode("v0.0.38", help="slurmrestd's API version (v0.0.38: Slurm 22.05)").tag(config=True)
    partition = Unicode("", help="Partition (sbatch --partition); empty: the cluster's default").tag(config=True)
    account = Unicode("", help="Account (sbatch --account)").tag(config=True)
    qos = Unicode("", help="Quality of service (sbatch --qos)").tag(config=True)
    sbatch_options = Dict(
        value_trait=Unicode(),
        help="More sbatch options, long name -> value ({'constraint': 'gpu'} is --constraint=gpu)",
    ).tag(config=True)
    prologue = Unicode("", help="Shell lines the job runs before the server starts (module load ...)").tag(config=True)
    cmd = List(Unicode(), default_value=["jupyterhub-singleuser"], help="Command that starts the server").tag(
        config=True
    )
    args = List(Unicode(), help="Extra arguments appended to cmd").tag(config=True)
    python = Unicode(
        "python3", help="Python 3 on the compute nodes: runs the job's few lines that pick and report the port"
    ).tag(config=True)
    job_user = Union(
        [Unicode(), Callable()],
        default_value="",
        help="Unix account jobs run as: a name, or a callable (hub, user_name, user_options) -> name. Required "
        "when the outpost runs as root; 'root' only when set so explicitly. Never taken from a hub's request.",
    ).tag(config=True)
    job_dir = Unicode(
        "",
        help="The job's working directory (its output file goes there too), on the compute nodes; readable by "
        "the outpost where it shares the filesystem (a failed start then shows the output). Default: the job "
        "user's home with the commands, /tmp with slurmrestd",
    ).tag(config=True)
    start_timeout = Float(3600.0, help="Longest wait in the queue (seconds) before the job is cancelled").tag(
        config=True
    )
    listen_timeout = Float(120.0, help="Seconds from the job's start until its server must listen").tag(config=True)
    query_interval = Float(
        10.0, help="Seconds between the controller queries that every poll of every function instance shares"
    ).tag(config=True)
    start_query_interval = Float(
        1.0, help="The same while a start waits for its job: one query for all waiting starts"
    ).tag(config=True)
    controller_timeout = Float(20.0, help="Seconds a controller query may take before it counts as failed").tag(
        config=True
    )
    stale_warning = Float(
        120.0, help="Answer polls from a job list this old (controller unreachable) with a warning in the log"
    ).tag(config=True)
    name_prefix = Unicode("outpost-", help="Prefix of the jobs' names: the jobs of this outpost").tag(config=True)


# Chosen by the administrator alone: a hub choosing them would choose who its job runs as, what runs around
# its server, or what the controller is asked.
ADMIN_ONLY = frozenset(
    {
        "rest_url", "rest_token", "rest_user", "rest_api", "sbatch_options", "prologue", "python", "job_user",
        "job_dir", "query_interval", "start_query_interval", "controller_timeout", "stale_warning", "name_prefix",
    }
)  # fmt: skip
