"""``GET /v1/jobs/{id}/events``: a job's events as Server-Sent Events, resumable.

Each SSE message carries the event's stream id, so a client that reconnects with
``Last-Event-ID`` gets what came after it (:mod:`agents.events`). The stream ends after the
job's terminal state. Reads wait on the loop (``redis.asyncio``), so an open stream holds no
thread; while nothing happens the job's state is checked once a poll, and a comment line keeps
proxies from closing a quiet connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import redis
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from agents.events import newer, read_async
from chordal.gateway.jobs import Current, Tenant, own
from workers.errors import ChordalError

router = APIRouter(prefix="/v1")
POLL_MS = 1_000


@router.get(
    "/jobs/{job_id}/events",
    summary="A job's events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    request: Request,
    tenant: Tenant,
    gateway: Current,
    job_id: str,
    last_event_id: Annotated[
        str | None, Header(max_length=41, pattern=r"^\d{1,20}-\d{1,20}$")
    ] = None,
) -> StreamingResponse:
    """``state`` (the job's), ``member`` (a team member's, tagged with it) and ``token``
    events, in order, to the job's end; send ``Last-Event-ID`` to resume after an event."""
    await run_in_threadpool(own, gateway, job_id, tenant)
    return StreamingResponse(
        _messages(request, gateway, job_id, after=last_event_id or "0-0"),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _messages(
    request: Request, gateway: Current, job_id: str, *, after: str
) -> AsyncIterator[str]:
    while not await request.is_disconnected():
        try:
            batch = await read_async(gateway.async_redis, job_id, after=after, block_ms=POLL_MS)
            end = None if batch else await run_in_threadpool(gateway.client.ended, job_id)
        except (ChordalError, redis.RedisError, OSError):
            # The response has started: no error status can be sent now. The client keeps
            # the stream, or reconnects with Last-Event-ID.
            yield ": the event store did not answer; retrying\n\n"
            await asyncio.sleep(POLL_MS / 1000)
            continue
        if end is not None and not newer(end, after):
            return  # the reader has seen the end already
        for event in [*batch, *([end] if end is not None else [])]:
            yield event.sse()
            after = event.id
            if event.terminal:
                return
        if not batch:
            yield ": waiting\n\n"
