"""Servers as Slurm jobs. A start submits a batch job as the administrator's `job_user`; the job takes a free
port on its node and reports it in its comment with the start's secret's hmac; the outpost publishes the
address only when that proof holds and the host is the node Slurm runs the job on, and only once the server
listens there. Every state the backend reads comes from one shared job list (`snapshot`), so polls cost the
controller nothing of their own, and a controller that does not answer leaves the last known states standing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import pwd
import re
import secrets
import stat
import time
from typing import Any

from traitlets.config import Config

from outpost.backends import common, output
from outpost.backends.base import Progress, SaveState, Started, StartSpec, options_for_start
from outpost.backends.slurm import script
from outpost.backends.slurm.controller import Commands, Controller, ControllerUnreachable, Rest
from outpost.backends.slurm.jobs import Comment, Job, parse_comment, proven_port
from outpost.backends.slurm.options import ADMIN_ONLY, SlurmBackend
from outpost.backends.slurm.snapshot import JobList, SharedCache, Snapshot
from outpost.errors import BackendError, ConfigurationError, InvalidBody, shown
from outpost.models import ServiceId

log = logging.getLogger(__name__)
# A Unix account name as useradd accepts it.
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?")
# Variables the hub may not set: Slurm's and sbatch's own (they steer the job), and the wrapper's.
_RESERVED_ENV = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SPANK_", "OUTPOST_")
# Variables the job takes from the outpost's environment; the rest comes from the hub.
_INHERITED = ("PATH", "LANG", "LC_ALL", "SLURM_CONF")
# How often a waiting start looks at the shared job list, and at its server's port once it has one.
_LOOK_SECONDS = 0.1
_CONNECT_SECONDS = 0.05


class SlurmJobBackend:
    """The `slurm` backend (OUTPOST_BACKEND=slurm, `c.SlurmBackend.*`)."""

    def __init__(self, config: Config, cache: SharedCache) -> None:
        self._config = config
        self._cache = cache
        self._defaults = SlurmBackend(config=config)
        # The identity goes in the job's admin comment, which slurmrestd's v0.0.38 cannot set.
        self.keeps_identity = not self._defaults.rest_url
        self._node_addresses: dict[str, str] = {}

    @functools.cached_property
    def controller(self) -> Controller:
        o = self._defaults
        if o.rest_url:
            if not o.rest_token:
                raise ConfigurationError("c.SlurmBackend.rest_url needs c.SlurmBackend.rest_token (or $SLURM_JWT)")
            return Rest(o.rest_url, o.rest_token, o.rest_user, o.rest_api, o.controller_timeout)
        return Commands(o.controller_timeout)

    @functools.cached_property
    def jobs(self) -> JobList:
        return JobList(self.controller, self._cache, self._defaults.name_prefix)

    def _options(self, misc: dict[str, Any]) -> SlurmBackend:
        return options_for_start(self._defaults, misc, ADMIN_ONLY)

    def _job_user(self, spec: StartSpec) -> str:
        """The account the job runs as: the administrator's choice alone, never root unless named so."""
        chosen = self._defaults.job_user
        if callable(chosen):
            name = chosen(spec.sid.hub, spec.env.get("JUPYTERHUB_USER", ""), dict(spec.user_options))
            if name == "root":
                raise ConfigurationError("c.SlurmBackend.job_user chose root: set job_user = 'root' to allow it")
        else:
            name = chosen
        if not name:
            if os.geteuid() == 0:
                raise ConfigurationError(
                    "the Slurm backend needs c.SlurmBackend.job_user when the outpost runs as root"
                )
            name = pwd.getpwuid(os.geteuid()).pw_name
        if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
            raise ConfigurationError(f"c.SlurmBackend.job_user gave no account name: {shown([name])}")
        return name

    def _job_dir(self, options: SlurmBackend, user: str) -> str:
        if options.job_dir:
            return options.job_dir
        if isinstance(self.controller, Rest):
            return "/tmp"
        try:
            return pwd.getpwnam(user).pw_dir
        except KeyError:
            raise ConfigurationError(f"the job user {user!r} does not exist on this machine") from None

    def _environment(self, spec: StartSpec, options: SlurmBackend, secret: str, comment: str) -> dict[str, str]:
        reserved = sorted(name for name in spec.env if name.startswith(_RESERVED_ENV))
        if reserved:
            raise InvalidBody(f"these variables are the outpost's or Slurm's own: {shown(reserved)}")
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.update(spec.env)
        env.update(common.resource_env(spec.resources))
        invalid = sorted(k for k, v in env.items() if "\0" in k or "\0" in v or "=" in k or not k)
        if invalid:
            raise InvalidBody(f"the server's environment is invalid: {shown(invalid)}")
        argv = [*options.cmd, *options.args]
        if not argv:
            raise ConfigurationError("c.SlurmBackend.cmd is empty")
        env.update(OUTPOST_START_SECRET=secret, OUTPOST_JOB_COMMENT=comment, OUTPOST_SERVER_ARGV=json.dumps(argv))
        return env

    async def start(self, spec: StartSpec, save_state: SaveState, progress: Progress) -> Started:
        if common.uses_tls(spec.certs):
            raise BackendError("the Slurm backend does not serve internal_ssl yet: turn it off for this outpost")
        options = self._options(spec.misc)
        user = self._job_user(spec)
        key = common.service_dir_name(spec.sid)
        secret = secrets.token_urlsafe(24)
        comment = Comment(spec.sid).text()
        workdir = self._job_dir(options, user)
        limits: dict[str, Any] = dict(spec.resources)
        if spec.runtime_seconds:  # Slurm itself ends the job at the flavor's runtime limit
            limits["time"] = str(script.minutes(spec.runtime_seconds))
        job_options = script.job_options(
            {"partition": options.partition, "account": options.account, "qos": options.qos, **options.sbatch_options},
            {},
            limits,
            {"job-name": options.name_prefix + key, "comment": comment, "chdir": workdir,
             "output": f"{workdir}/outpost-{key}.log"},
        )  # fmt: skip
        env = self._environment(spec, options, secret, comment)
        job_id = await self.controller.submit(
            script.batch_script(options.python, options.prologue), job_options, env, user
        )
        state: dict[str, Any] = {"job_id": job_id, "secret": secret, "user": user, "output": job_options["output"]}
        try:
            await save_state(state)
            await progress(30, f"Submitted as Slurm job {job_id}")
            return await self._until_served(state, options, save_state, progress, [*spec.env.values()])
        except BaseException:
            await self._cancel_quietly(job_id)
            raise

    async def _until_served(
        self,
        state: dict[str, Any],
        options: SlurmBackend,
        save_state: SaveState,
        progress: Progress,
        secret_values: list[str],
    ) -> Started:
        job_id = int(state["job_id"])
        submitted = time.time()
        running_since: float | None = None
        said = ""
        while True:
            snapshot = await self.jobs.current(options.start_query_interval)
            job = snapshot.jobs.get(job_id)
            if job is None:
                if snapshot.listed_at > submitted + options.start_query_interval and not snapshot.stale:
                    raise BackendError(f"Slurm job {job_id} vanished before its server listened")
            elif job.waiting:
                if time.time() - submitted > options.start_timeout:
                    raise BackendError(
                        f"Slurm job {job_id} was still queued after {options.start_timeout:.0f} s "
                        f"({job.reason}); it is cancelled"
                    )
                note = _queued_note(job)
                if note != said:
                    said = note
                    await progress(40, note)
                    # A write to the record: the reconciler takes a start that wrote nothing for its start
                    # timeout for a dead one, and a long queue wait is not.
                    await save_state(state)
            elif job.ended:
                tail = output.clean_tail(_job_output(state).splitlines(), secret_values)
                raise BackendError(output.with_tail(_ended_message(job), tail))
            else:
                if running_since is None:
                    running_since = time.time()
                    await progress(60, f"Slurm job {job_id} runs on {job.node}; waiting for its server")
                served = await self._served(job, state)
                if served is not None:
                    return served
                if time.time() - running_since > options.listen_timeout:
                    tail = output.clean_tail(_job_output(state).splitlines(), secret_values)
                    raise BackendError(
                        output.with_tail(f"the server of Slurm job {job_id} did not listen within "
                                         f"{options.listen_timeout:.0f} s", tail)
                    )  # fmt: skip
            await asyncio.sleep(_LOOK_SECONDS)

    async def _served(self, job: Job, state: dict[str, Any]) -> Started | None:
        """The server's address once the job proved its port and a connection there succeeds."""
        port = proven_port(job, state["secret"])
        if port is None:
            return None
        host = self._node_addresses.get(job.node)
        if host is None:  # a node's address rarely changes: asked once per node and process
            host = self._node_addresses[job.node] = await self.controller.node_address(job.node)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if await _accepts(host, port):
                state.update(host=host, port=port, node=job.node)
                return Started(address=f"http://{host}:{port}", state=state)
            await asyncio.sleep(_CONNECT_SECONDS)
        return None

    async def poll(self, state: dict[str, Any]) -> int | None:
        snapshot = await self.jobs.current(self._defaults.query_interval)
        self._warn_if_stale(snapshot)
        job = snapshot.jobs.get(int(state["job_id"]))
        if job is None:
            if not snapshot.listed_at:
                return None  # never listed since the controller went away: it runs, as far as anyone knows
            ended = await self._accounted(int(state["job_id"]))
            return ended.exit_code if ended is not None else 0
        return job.exit_code if job.ended else None

    def _warn_if_stale(self, snapshot: Snapshot) -> None:
        age = time.time() - snapshot.listed_at
        if snapshot.stale and age > self._defaults.stale_warning:
            log.warning(
                "the Slurm controller has not answered for %.0f s (%s): polls answer the jobs' last known states",
                age, snapshot.error,
            )  # fmt: skip

    async def _accounted(self, job_id: int) -> Job | None:
        """A job the controller forgot (it ended over MinJobAge ago): the accounting database's word, if any."""
        try:
            found = await self.controller.accounting(job_id)
        except ControllerUnreachable:
            return None
        return found if found is not None and found.ended else None

    async def stop(self, state: dict[str, Any]) -> None:
        await self.controller.cancel(int(state["job_id"]))

    async def _cancel_quietly(self, job_id: int) -> None:
        try:
            await self.controller.cancel(job_id)
        except BackendError as exc:
            log.warning("could not cancel Slurm job %s after its start failed: %s", job_id, exc.message)

    async def logs(self, state: dict[str, Any]) -> list[str]:
        return common.log_tail(_job_output(state))

    async def running(self) -> list[tuple[ServiceId, dict[str, Any]]]:
        snapshot = await self.jobs.current(self._defaults.query_interval)
        found = []
        for job in snapshot.jobs.values():
            comment = parse_comment(job.comment)
            if comment is None or job.ended:
                continue
            state: dict[str, Any] = {"job_id": job.job_id, "user": job.user}
            if comment.port is not None:
                state.update(port=comment.port, node=job.node)
            found.append((comment.sid, state))
        return found

    async def remember(self, state: dict[str, Any], sealed: str) -> None:
        if self.keeps_identity:
            assert isinstance(self.controller, Commands)
            await self.controller.set_admin_comment(int(state["job_id"]), sealed)

    async def recall(self, state: dict[str, Any]) -> str | None:
        snapshot = await self.jobs.current(self._defaults.query_interval)
        job = snapshot.jobs.get(int(state["job_id"]))
        return job.admin_comment or None if job is not None else None

    async def aclose(self) -> None:
        controller = self.__dict__.get("controller")
        if isinstance(controller, Rest):
            await controller.aclose()


def _job_output(state: dict[str, Any]) -> str:
    """The end of the job's output file, only while it is a regular file of the job's own user: the output
    lies where that user writes (its home by default), and the outpost (root, on a login node) must not read
    a link to a file only root may read in its place, nor show it to the hub. Empty otherwise."""
    try:
        owner = pwd.getpwnam(state["user"]).pw_uid
        fd = os.open(state["output"], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (OSError, KeyError):
        return ""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != owner:
            return ""
        start = max(0, info.st_size - output.READ_BYTES)
        return os.pread(fd, output.READ_BYTES, start).decode(errors="replace")
    finally:
        os.close(fd)


def _queued_note(job: Job) -> str:
    note = f"Slurm job {job.job_id} is queued ({job.reason})"
    if job.start_estimate > time.time():
        note += f", expected to start at {time.strftime('%H:%M:%S', time.localtime(job.start_estimate))}"
    return note


def _ended_message(job: Job) -> str:
    return (
        f"Slurm job {job.job_id} ended before its server listened: {job.state} "
        f"(reason {job.reason}, exit code {job.exit_code})"
    )


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
