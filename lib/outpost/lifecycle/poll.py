"""A hub's poll: one Redis read on the hot path; the backend is asked only when no fresh pod status is known."""

from __future__ import annotations

from dataclasses import dataclass

from outpost import errors
from outpost.lifecycle import pod_status
from outpost.lifecycle.adoption import readopt
from outpost.lifecycle.notes import callback_notes
from outpost.models import TERMINAL_PHASES, Phase, ServiceId
from outpost.runtime import Runtime


@dataclass(frozen=True)
class Polled:
    status: int | None  # JupyterHub's poll answer: None while the server runs, else its exit code
    logs: list[str] | None  # only when asked for


async def poll(runtime: Runtime, sid: ServiceId, *, collect_logs: bool) -> Polled:
    view = await runtime.store.poll_record(sid)
    if view is None and await readopt(runtime, sid):
        view = await runtime.store.poll_record(sid)
    if view is None:
        raise errors.UnknownService()
    meta, state = view, view.state
    status: int | None = None
    if meta.phase in TERMINAL_PHASES:
        status = meta.exit_code or 0
    elif meta.phase == Phase.RUNNING and state is not None:
        status = await pod_status.cached_poll(runtime, meta, state)
        if status is not None:  # gone: the one write a poll makes, so its address leaves the index at once
            await runtime.store.mark_ended(sid, status)
    if not collect_logs:
        return Polled(status, None)
    body, _, _ = await runtime.store.secrets(sid)
    logs = await runtime.backend.logs(state) if state is not None else []
    return Polled(status, callback_notes(runtime, sid, body.get("env", {})) + logs)
