"""Cancelling a job and everything it started.

``cancel`` marks the job cancelled in Redis and announces it on a pub/sub channel. Every task
checks the mark before it runs (:class:`agents.tasks.ChordalTask`), so nothing of the job starts
after the cancel. Each tier worker process listens on the channel and cancels that job's calls
still in flight on its event loop, so they stop at their next ``await``. Jobs are keyed by their
root id: a team's members, rounds and aggregator all share the id of the job the producer
submitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import redis
import redis.asyncio

from workers.tls import redis_ssl

logger = logging.getLogger(__name__)

CANCEL_CHANNEL = "chordal:cancel"
CANCEL_PREFIX = "chordal:cancelled:"


def cancel_key(job_id: str) -> str:
    """The Redis key that marks ``job_id`` cancelled."""
    return f"{CANCEL_PREFIX}{job_id}"


def request_cancel(client: redis.Redis, job_id: str, *, ttl_s: int) -> None:
    """Mark ``job_id`` cancelled and tell every worker process."""
    client.set(cancel_key(job_id), 1, ex=ttl_s)
    client.publish(CANCEL_CHANNEL, job_id)


def is_cancelled(client: redis.Redis, job_id: str) -> bool:
    """True once ``job_id`` was cancelled."""
    return bool(client.exists(cancel_key(job_id)))


class InFlight:
    """This process's running calls by job id, so a cancel can reach them."""

    def __init__(self) -> None:
        self._tasks: defaultdict[str, set[asyncio.Task[object]]] = defaultdict(set)

    def track(self, job_id: str, task: asyncio.Task[object]) -> None:
        """Remember ``task`` as part of ``job_id`` until it finishes."""
        self._tasks[job_id].add(task)
        task.add_done_callback(lambda done: self._forget(job_id, done))

    def _forget(self, job_id: str, task: asyncio.Task[object]) -> None:
        tasks = self._tasks.get(job_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[job_id]

    def cancel(self, job_id: str) -> int:
        """Cancel every call of ``job_id``; returns how many were running."""
        tasks = list(self._tasks.get(job_id, ()))
        for task in tasks:
            task.cancel()
        return len(tasks)

    def job_ids(self) -> list[str]:
        """The jobs with a call running now."""
        return list(self._tasks)


async def listen(url: str, in_flight: InFlight) -> None:
    """Cancel in-flight calls of every job announced on the cancel channel, until cancelled.

    A lost connection ends it with the error: run it under :func:`workers.supervise.supervise`,
    which starts it again. Announcements made while it was away are gone (pub/sub keeps
    nothing), so once subscribed it first cancels every call whose job is already marked.
    """
    client = redis.asyncio.Redis.from_url(url, **redis_ssl(url))
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(CANCEL_CHANNEL)
        for job_id in in_flight.job_ids():
            if await client.exists(cancel_key(job_id)):
                _stop(in_flight, job_id)
        async for message in pubsub.listen():
            if message.get("type") == "message":
                _stop(in_flight, message["data"].decode())
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
        await client.aclose()


def _stop(in_flight: InFlight, job_id: str) -> None:
    stopped = in_flight.cancel(job_id)
    if stopped:
        logger.info("job %s cancelled: stopped %d call(s) in flight", job_id, stopped)
