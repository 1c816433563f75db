"""Slurm's jobs as the backend reads them: one shape from `squeue --json` and from slurmrestd's `GET /jobs`
(both speak the v0.0.38 job schema), and the job's comment, which carries its identity and its port.

The comment: `outpost1;<service id>` when submitted; the job adds `;port=<port>;mac=<hmac>` once its server has
a port (the hmac, of the job id and port with the start's secret, proves the job wrote it). It holds no secret.
The sealed identity (for re-adoption) is longer than a comment may be (1,024 characters): it goes in the job's
admin comment, which only root or SlurmUser may set, sealed with the Fernet key.
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass
from typing import Any

from outpost.backends.slurm.job_wrapper import port_mac
from outpost.models import ServiceId

COMMENT_VERSION = "outpost1"
# States after which a job never runs again (squeue's long names).
ENDED = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"})


@dataclass(frozen=True)
class Job:
    job_id: int
    name: str
    state: str
    reason: str
    nodes: str
    start_estimate: int  # seconds since the epoch; 0 when Slurm has none
    exit_status: int  # the wait status Slurm reports: exit code << 8, or the signal
    comment: str
    user: str
    admin_comment: str = ""  # the sealed identity (only root or SlurmUser may set it; the commands path does)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def waiting(self) -> bool:
        return self.state in WAITING

    @property
    def exit_code(self) -> int:
        """As a shell shows it: the code, or 128 + the signal (an scancel's SIGTERM is 143)."""
        signal = self.exit_status & 0x7F
        return 128 + signal if signal else (self.exit_status >> 8) & 0xFF

    @property
    def node(self) -> str:
        """The node the batch script runs on (an interactive server is a one-node job)."""
        return self.nodes.split(",")[0]

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def parse_job(raw: dict[str, Any]) -> Job:
    """One job of `squeue --json`'s or slurmrestd's list."""
    return Job(
        job_id=int(raw["job_id"]),
        name=str(raw.get("name") or ""),
        state=str(raw.get("job_state") or "UNKNOWN"),
        reason=str(raw.get("state_reason") or "None"),
        nodes=str(raw.get("nodes") or ""),
        start_estimate=int(raw.get("start_time") or 0),
        exit_status=int(raw.get("exit_code") or 0),
        comment=str(raw.get("comment") or ""),
        user=str(raw.get("user_name") or ""),
        admin_comment=str(raw.get("admin_comment") or ""),
    )


def job_from_json(values: dict[str, Any]) -> Job:
    return Job(**values)


@dataclass(frozen=True)
class Comment:
    sid: ServiceId
    port: int | None = None
    mac: str = ""

    def text(self) -> str:
        parts = [COMMENT_VERSION, _encode_sid(self.sid)]
        if self.port is not None:
            parts += [f"port={self.port}", f"mac={self.mac}"]
        return ";".join(parts)


def _encode_sid(sid: ServiceId) -> str:
    return base64.urlsafe_b64encode(json.dumps([sid.hub, sid.name, sid.start_id]).encode()).decode().rstrip("=")


def parse_comment(text: str) -> Comment | None:
    """The comment of one of our jobs, or None for anything else (another program's job, a user's edit)."""
    parts = text.split(";")
    if len(parts) < 2 or parts[0] != COMMENT_VERSION:
        return None
    try:
        hub, name, start_id = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        sid = ServiceId(str(hub), str(name), str(start_id))
        fields = dict(part.partition("=")[::2] for part in parts[2:])
        port = int(fields["port"]) if "port" in fields else None
    except (ValueError, TypeError):
        return None
    return Comment(sid, port, fields.get("mac", ""))


def proven_port(job: Job, secret: str) -> int | None:
    """The port the job reported, if the report carries the start's secret's hmac; None until then."""
    comment = parse_comment(job.comment)
    if comment is None or comment.port is None or not 0 < comment.port < 65536:
        return None
    if not hmac.compare_digest(comment.mac, port_mac(secret, job.job_id, comment.port)):
        return None
    return comment.port
