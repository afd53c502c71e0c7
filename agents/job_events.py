"""The worker's side of a job's events (:mod:`agents.events`): what its tasks record as they
change state, end, or stream tokens.

A task working for a job records under the job's id (its root): its own state if it *is* the
job (the job's id after hand-offs, or a team's aggregator, which finishes under the team's id),
a ``member`` event otherwise, tagged with its task id and agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from celery import Task

from agents.events import Events, Kind, state_data
from workers.app import app
from workers.handoff import HANDED_OFF
from workers.observability.redaction import redact
from workers.settings import get_settings

# A team member's outcome is data: a failed member returns this status instead of raising.
_FAILED_MEMBER = {"failed", "timed_out"}


@lru_cache(maxsize=1)
def events() -> Events:
    """This process's event streams, in the result backend's Redis."""
    settings = get_settings()
    return Events(app.backend.client, maxlen=settings.stream_maxlen, ttl_s=settings.stream_ttl_s)


def changed(task: Task, state: str, info: Mapping[str, Any] | None) -> None:
    """Record that ``task`` reached ``state`` (``info``: its meta or result)."""
    if not get_settings().job_events:
        return
    request = task.request
    root = str(request.root_id or request.id)
    data = state_data(state, info)
    kind: Kind = "state"
    if str(request.id) != root:
        kind = "member"
        data = {"member": str(request.id), "agent": _target(request.args), **data}
    events().publish(root, kind, data)


def succeeded(task: Task, retval: Any) -> None:
    """Record ``task``'s end with ``retval`` (nothing for a hand-off: its successor ends it)."""
    if isinstance(retval, str) and retval == HANDED_OFF:
        return
    info = retval if isinstance(retval, Mapping) else None
    failed = info is not None and info.get("status") in _FAILED_MEMBER
    changed(task, "FAILURE" if failed else "SUCCESS", info)


def failed(task: Task, exc: BaseException) -> None:
    """Record ``task``'s failure with ``exc``."""
    # A provider's error quotes its answer, which may quote the prompt.
    error = redact(str(exc)) if get_settings().store_redacted else str(exc)
    changed(task, "FAILURE", {"error": error, "error_type": type(exc).__name__})


def _target(args: Any) -> str | None:
    # The job travels as the first argument of every Chordal task that works for one.
    job = args[0] if isinstance(args, list | tuple) and args else None
    if isinstance(job, Mapping):
        return str(job.get("agent") or job.get("team") or "") or None
    return None
