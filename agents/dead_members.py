"""A dead-lettered message still ends its job: a team member as a failed member, the rest FAILED.

A message that goes to the dead-letter list (it came back past ``CHORDAL_MAX_DELIVERIES``, or
it is not a job) never runs again. Left at that, a team whose member it was would wait for its
chord until the watchdog settles it at the deadline. Here the member's place in the chord is
filled the way a failing member fills it (:class:`~agents.result.MemberFailure`, data for the
aggregator), so the team goes on with the members it has; anything else ends ``FAILURE`` with
the reason, joining its chord (if any) as a failure.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from celery import Celery
from celery.app.task import Context

from agents.result import MemberFailure
from workers.errors import MalformedMessage


def member_failure(task_id: str, args: Any, kwargs: Any, error: str) -> dict[str, Any] | None:
    """The MemberFailure a dead-lettered team member leaves for its aggregator (``error`` says
    why); None if the message is not a team member's."""
    if not isinstance(kwargs, dict) or kwargs.get("member") is not True:
        return None
    job = args[0] if isinstance(args, (list, tuple)) and args else None
    job = job if isinstance(job, dict) else {}
    agent = job.get("agent") or job.get("team")
    metadata = job.get("metadata")
    return MemberFailure(
        job_id=task_id,
        agent=agent if isinstance(agent, str) else "unknown",
        metadata=metadata if isinstance(metadata, dict) else {},
        error_kind=MalformedMessage.__name__,
        error=error,
    ).model_dump(mode="json")


def end_dead_lettered(app: Celery, payload: dict[str, Any], reason: str) -> None:
    """End the job of a message (as kombu's Redis transport keeps it) that was dead-lettered
    without running: a member joins its team's chord as failed, anything else ends FAILURE."""
    headers = payload.get("headers") or {}
    task_id = headers.get("id")
    if not task_id:
        return
    args, kwargs, embed = _body(payload)
    request = Context(
        id=task_id,
        task=headers.get("task"),
        root_id=headers.get("root_id"),
        parent_id=headers.get("parent_id"),
        group=headers.get("group"),
        group_index=headers.get("group_index"),
        chord=embed.get("chord"),
        args=args,
        kwargs=kwargs,
        delivery_info=(payload.get("properties") or {}).get("delivery_info") or {},
    )
    error = f"dead-lettered: {reason}"
    failure = member_failure(task_id, args, kwargs, error)
    if failure is not None and request.chord:
        app.backend.mark_as_done(task_id, failure, request=request)
    else:
        app.backend.mark_as_failure(task_id, MalformedMessage(error, None), request=request)


def _body(payload: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    # Celery's message protocol 2: the body is [args, kwargs, embed]; the embed holds the chord
    # this task is a part of. A body that is none of that (a poison message) has no chord.
    body: Any = payload.get("body")
    try:
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded: Any = json.loads(body) if isinstance(body, (str, bytes)) else body
        args, kwargs, embed = decoded
    except (TypeError, ValueError):
        return (), {}, {}
    return args, kwargs, embed if isinstance(embed, dict) else {}
