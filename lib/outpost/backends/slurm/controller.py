"""The two ways to reach Slurm, behind one interface: the commands (sbatch, squeue, scancel, scontrol, sacct on
PATH, for an outpost on a login node and `outpost dev`) and slurmrestd (HTTP with a JWT, for functions that
have no Slurm binaries, munge key or slurm.conf). Both pass the same tests (tests/slurm)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from outpost.backends.slurm.jobs import Job, parse_job
from outpost.backends.slurm.script import rest_properties, sbatch_arguments
from outpost.errors import BackendError

if TYPE_CHECKING:
    import httpx


class ControllerUnreachable(BackendError):
    """slurmctld (or slurmrestd) did not answer: what it last said still stands."""


class Controller(Protocol):
    async def submit(self, script: str, options: Mapping[str, str], env: Mapping[str, str], user: str) -> int:
        """Submit the batch job as `user`; its id."""

    async def jobs(self) -> list[Job]:
        """Every job the controller holds (running, waiting and recently ended): one controller RPC."""

    async def cancel(self, job_id: int) -> None:
        """SIGTERM to the job, SIGKILL after the cluster's KillWait; a job that has ended is no error."""

    async def node_address(self, node: str) -> str:
        """Where the node is reached (its NodeAddr)."""

    async def accounting(self, job_id: int) -> Job | None:
        """The job from the accounting database once the controller forgot it; None without accounting."""


class Commands:
    """The Slurm commands, each a process: a busy or missing controller is a failed command or a timeout."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def _run(self, *argv: str, stdin: bytes = b"", pass_fd: int | None = None) -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=() if pass_fd is None else (pass_fd,),
            )  # fmt: skip
        except OSError as exc:
            raise ControllerUnreachable(f"cannot run {argv[0]}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self._timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ControllerUnreachable(f"{argv[0]} did not answer within {self._timeout:.0f} s") from None
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()

    async def submit(self, script: str, options: Mapping[str, str], env: Mapping[str, str], user: str) -> int:
        identity = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(user)
            identity = [f"--uid={account.pw_uid}", f"--gid={account.pw_gid}"]
        # The job's environment goes through a pipe (--export-file): sbatch itself never sees the hub's
        # variables, so none of them (SBATCH_*) can change what it submits.
        read, write = os.pipe()
        try:
            os.write(write, b"".join(f"{k}={v}\0".encode() for k, v in env.items()))
        finally:
            os.close(write)
        try:
            code, out, err = await self._run(
                "sbatch", "--parsable", *identity, f"--export-file={read}", *sbatch_arguments(options),
                stdin=script.encode(), pass_fd=read,
            )  # fmt: skip
        finally:
            os.close(read)
        if code:
            raise BackendError(f"sbatch refused the job: {err or out}".strip())
        return int(out.strip().split(";")[0])

    async def jobs(self) -> list[Job]:
        code, out, err = await self._run("squeue", "--json")
        try:
            answer = json.loads(out)
            errors = [str(e.get("description") or e.get("error")) for e in answer.get("errors", [])]
            jobs = [parse_job(raw) for raw in answer["jobs"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ControllerUnreachable(f"squeue failed: {err or exc}") from None
        # With the controller away, squeue prints an empty list and an error: that list is no answer.
        if code or errors:
            raise ControllerUnreachable(f"squeue failed: {'; '.join(errors) or err}")
        return jobs

    async def cancel(self, job_id: int) -> None:
        code, _, err = await self._run("scancel", str(job_id))
        if code and "already completed" not in err and "Invalid job id" not in err:
            raise ControllerUnreachable(f"scancel failed: {err}")

    async def set_admin_comment(self, job_id: int, text: str) -> None:
        """Only root or SlurmUser may set it (the job's user cannot change it): the sealed identity goes there."""
        code, _, err = await self._run("scontrol", "update", f"JobId={job_id}", f"AdminComment={text}")
        if code:
            raise ControllerUnreachable(f"scontrol update failed: {err}")

    async def node_address(self, node: str) -> str:
        code, out, err = await self._run("scontrol", "show", "node", "--oneliner", node)
        if code:
            raise ControllerUnreachable(f"scontrol show node failed: {err}")
        fields = dict(item.partition("=")[::2] for item in out.split())
        return fields.get("NodeAddr") or node

    async def accounting(self, job_id: int) -> Job | None:
        code, out, _ = await self._run("sacct", "--json", "--jobs", str(job_id))
        if code:
            return None  # no accounting storage (or no sacct): the caller decides
        try:
            jobs = json.loads(out)["jobs"]
            return _sacct_job(jobs[0]) if jobs else None
        except (ValueError, KeyError, TypeError, IndexError):
            return None


def _sacct_job(raw: dict[str, Any]) -> Job:
    """sacct --json's shape (state and exit code are objects there)."""
    state = raw.get("state", {})
    exit_code = raw.get("exit_code", {})
    status = int(exit_code.get("return_code") or 0) << 8 | int((exit_code.get("signal") or {}).get("signal_id") or 0)
    return Job(
        job_id=int(raw["job_id"]), name=str(raw.get("name", "")), state=str(state.get("current", "UNKNOWN")),
        reason=str(state.get("reason", "None")), nodes=str(raw.get("nodes", "")), start_estimate=0,
        exit_status=status, comment=str((raw.get("comment") or {}).get("job", "")), user=str(raw.get("user", "")),
    )  # fmt: skip


class Rest:
    """slurmrestd: a job is submitted as `user` with a token of SlurmUser (or root), which may act for users."""

    def __init__(self, url: str, token: str, token_user: str, api: str, timeout: float) -> None:
        self._base = f"{url.rstrip('/')}/slurm/{api}"
        self._token = token
        self._token_user = token_user
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx  # only the REST path needs it

            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self._client

    async def _call(self, method: str, path: str, body: object = None, user: str = "") -> dict[str, Any]:
        import httpx

        headers = {"X-SLURM-USER-NAME": user or self._token_user, "X-SLURM-USER-TOKEN": self._token}
        try:
            response = await self._http().request(method, self._base + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ControllerUnreachable(f"slurmrestd did not answer: {type(exc).__name__}") from None
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            raise ControllerUnreachable(f"slurmrestd answered {response.status_code} without JSON") from None
        errors = [e.get("error") or e.get("description") for e in answer.get("errors", []) if isinstance(e, dict)]
        if response.status_code >= 500 and not errors:
            raise ControllerUnreachable(f"slurmrestd answered {response.status_code}")
        if errors:
            answer["_errors"] = [str(e) for e in errors if e]
        return answer

    async def submit(self, script: str, options: Mapping[str, str], env: Mapping[str, str], user: str) -> int:
        job = {**rest_properties(options), "environment": dict(env)}
        answer = await self._call("POST", "/job/submit", {"script": script, "job": job}, user=user)
        if answer.get("_errors") or "job_id" not in answer:
            raise BackendError(f"slurmrestd refused the job: {'; '.join(answer.get('_errors', []))}")
        return int(answer["job_id"])

    async def jobs(self) -> list[Job]:
        answer = await self._call("GET", "/jobs")
        if answer.get("_errors"):
            raise ControllerUnreachable(f"slurmrestd: {'; '.join(answer['_errors'])}")
        try:
            return [parse_job(raw) for raw in answer["jobs"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ControllerUnreachable(f"slurmrestd's job list is not as expected: {exc}") from None

    async def cancel(self, job_id: int) -> None:
        answer = await self._call("DELETE", f"/job/{job_id}")
        errors = [e for e in answer.get("_errors", []) if "already completed" not in e and "Invalid job id" not in e]
        if errors:
            raise ControllerUnreachable(f"slurmrestd could not cancel job {job_id}: {'; '.join(errors)}")

    async def node_address(self, node: str) -> str:
        answer = await self._call("GET", f"/node/{node}")
        nodes = answer.get("nodes") or [{}]
        return str(nodes[0].get("address") or node)

    async def accounting(self, job_id: int) -> Job | None:
        return None  # slurmrestd's accounting endpoints need slurmdbd's plugin; the job's last state stands

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
