"""Calls in flight per deployment, fleet-wide, for the ``least-busy`` deployment strategy.

Each deployment has one sorted set, ``<prefix><deployment>``: a member per call admitted and
not yet recorded (its admission id), scored by when it stops counting. Admission adds the call
and every outcome (answered, failed, given back) removes it, each in the batch that the fleet
sends anyway (:class:`routing.pipelined.Batch`), so tracking costs no round trip of its own.
The router counts the members that still count, for the deployments of one read in one round
trip.

A worker that dies mid-call leaves its member behind: the score (admission time plus
``hold_s``, the longest a call may run) lets it stop counting on its own, and each add purges
the members past their time, so a set holds at most the calls of the last ``hold_s``. The
count is advice for spreading calls, never a limit: a write or read that fails is logged and
dropped (a read then counts nothing), and clocks that differ between hosts by a second shift
only when a dead worker's call stops counting.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import redis

from routing.pipelined import Batch

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "chordal:inflight:"


class InFlight:
    """Fleet-wide counts of calls in flight per deployment, kept in Redis."""

    def __init__(self, client: redis.Redis, *, hold_s: float, prefix: str = DEFAULT_PREFIX) -> None:
        if not hold_s > 0:
            raise ValueError(f"hold_s must be positive, not {hold_s}")
        self._client = client
        self.hold_s = hold_s
        self.prefix = prefix

    def key(self, deployment: str) -> str:
        """The sorted set of ``deployment``'s calls in flight."""
        return f"{self.prefix}{deployment}"

    def queue_add(self, batch: Batch, deployment: str, call_id: str) -> None:
        """Count call ``call_id`` as in flight on ``deployment``, sent with ``batch``."""
        key, now = self.key(deployment), time.time()

        def queue(pipe: redis.client.Pipeline) -> None:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {call_id: now + self.hold_s})
            pipe.expire(key, math.ceil(self.hold_s))

        batch.advisory(queue, on_error=lambda exc: self._dropped("count", deployment, exc))

    def queue_remove(self, batch: Batch, deployment: str, call_id: str) -> None:
        """Call ``call_id`` has ended on ``deployment`` (or never started), sent with ``batch``."""
        key = self.key(deployment)
        batch.advisory(
            lambda pipe: pipe.zrem(key, call_id),
            on_error=lambda exc: self._dropped("uncount", deployment, exc),
        )

    def counts(self, deployments: Sequence[str]) -> dict[str, int]:
        """Calls in flight on each of ``deployments`` now, read in one round trip (0 on error)."""
        if not deployments:
            return {}
        now = time.time()
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for deployment in deployments:
                    pipe.zcount(self.key(deployment), f"({now}", "+inf")
                found = pipe.execute()
        except redis.RedisError:
            logger.warning("could not read calls in flight; counting none", exc_info=True)
            found = [0] * len(deployments)
        return {d: int(n) for d, n in zip(deployments, found, strict=True)}

    def _dropped(self, what: str, deployment: str, error: Exception) -> None:
        logger.warning("could not %s a call in flight on %s", what, deployment, exc_info=error)
