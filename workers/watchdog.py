"""The watchdog: every job with a deadline reaches a terminal state, even if a message is lost.

Jobs with a deadline are registered in a Redis sorted set scored by deadline plus a grace period.
Every worker process sweeps it periodically. A sweep claims each overdue entry with ``ZREM``, so
only one process settles a given job. A job still not finished is then marked failed with
:class:`~workers.errors.DeadlineExceeded` and cancelled, so nothing of it runs on; a finished
job's entry is simply dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from celery import Celery, states

from workers.cancellation import request_cancel
from workers.errors import DeadlineExceeded

logger = logging.getLogger(__name__)

DEADLINES_KEY = "chordal:deadlines"
FINISHED = frozenset({states.SUCCESS, states.FAILURE, states.REVOKED})


def watch(app: Celery, job_id: str, *, deadline_at: float, grace_s: float) -> None:
    """Register ``job_id`` for settling if it is not finished ``grace_s`` after its deadline."""
    app.backend.client.zadd(DEADLINES_KEY, {job_id: deadline_at + grace_s})


def sweep(app: Celery, *, now: float, ttl_s: int) -> list[str]:
    """Settle every overdue job; returns the ids this call marked failed."""
    client = app.backend.client
    settled = []
    for raw in client.zrangebyscore(DEADLINES_KEY, 0, now):
        job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not client.zrem(DEADLINES_KEY, job_id):
            continue  # another worker claimed it first
        if app.AsyncResult(job_id).state in FINISHED:
            continue
        request_cancel(client, job_id, ttl_s=ttl_s)
        error = DeadlineExceeded(f"job {job_id} was still unfinished past its deadline")
        app.backend.mark_as_failure(job_id, error)
        logger.warning("watchdog settled job %s: unfinished past its deadline", job_id)
        settled.append(job_id)
    return settled


async def run(app: Celery, *, interval_s: float, ttl_s: int) -> None:
    """Sweep every ``interval_s`` seconds until cancelled (runs on a worker's event loop).

    A failed sweep ends it with the error: run it under :func:`workers.supervise.supervise`,
    which logs the traceback and starts it again after a backoff that grows while Redis stays
    away, instead of a traceback every ``interval_s``.
    """
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(sweep, app, now=time.time(), ttl_s=ttl_s)
