"""Retrying a Redis step through a blip: a restart, a failover, a full pool, a slow reply.

Writes a worker must not lose (the fleet's bookkeeping after a call, result parking, status
writes, the cancel listener) go through :func:`retry_redis` (or :func:`aretry_redis` for
``redis.asyncio``): on a connection error, a timeout or a server still loading its data, the
step is run again after 0.1 s, then 0.2 s, doubling up to 2 s between attempts, until it
succeeds or ``budget_s`` (``CHORDAL_REDIS_RETRY_S``) has passed; then the last error is raised.
Any other error (a wrong type, a script error, bad credentials) is raised at once: waiting does
not fix it.

A timeout does not say whether the server ran the command: the reply may be what was lost. So
a retried step must be safe to run twice -- give it an id and make the server skip what it has
already applied (``SET <marker> 1 NX`` in a script), or write absolute values rather than
increments. The step is a function that builds its commands anew on every attempt: a redis-py
pipeline forgets its commands once it has been executed, even when that failed.

Each retry is logged once, at WARNING, naming ``what``. There is no jitter: the steps retried
are short writes, and a few hundred threads reconnecting together are nothing to a Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis

from workers.greenlets import sleep

__all__ = ["FIRST_DELAY_S", "MAX_DELAY_S", "aretry_redis", "retry_redis", "retryable"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0

# BusyLoadingError and MaxConnectionsError are ConnectionErrors; so are refused credentials,
# which no wait fixes.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)
_PERMANENT = (
    redis.exceptions.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.ExternalAuthProviderError,
)


def retryable(error: BaseException) -> bool:
    """Whether ``error`` is a Redis failure that may pass: connection lost or refused, a
    timeout, a server loading its data, no free connection in the pool."""
    return isinstance(error, _TRANSIENT) and not isinstance(error, _PERMANENT)


def retry_redis(call: Callable[[], T], *, budget_s: float, what: str) -> T:
    """``call()``, run again while it raises a :func:`retryable` error, for up to ``budget_s``
    seconds in all; then that error is raised, with a note of the attempts.

    ``call`` must be safe to run twice (see the module's docstring). ``what`` names the step
    in the log, as in "recording gpt-5's call 3f2a...".
    """
    pause = _Pauses(budget_s, what)
    while True:
        try:
            return call()
        except _TRANSIENT as error:
            # On the loop pool a plain sleep would hold every task of the process.
            sleep(pause.after(error))


async def aretry_redis(call: Callable[[], Awaitable[T]], *, budget_s: float, what: str) -> T:
    """:func:`retry_redis` for coroutines: ``await call()``, with ``call`` making a new
    awaitable for every attempt (a coroutine can be awaited only once)."""
    pause = _Pauses(budget_s, what)
    while True:
        try:
            return await call()
        except _TRANSIENT as error:
            await asyncio.sleep(pause.after(error))


class _Pauses:
    """The backoff of one retried step, and when it must give up."""

    def __init__(self, budget_s: float, what: str) -> None:
        if budget_s < 0:
            raise ValueError(f"budget_s must not be negative, not {budget_s}")
        self.what = what
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.delay = FIRST_DELAY_S
        self.retries = 0

    def after(self, error: redis.RedisError) -> float:
        """Seconds to wait before the next attempt; raises ``error`` when it is not worth one."""
        if not retryable(error):
            raise error
        now = time.monotonic()
        left = self.deadline - now
        if left <= 0:
            spent = now - self.started
            error.add_note(
                f"{self.what}: gave up after {self.retries + 1} attempts in {spent:.1f} s"
            )
            raise error
        wait = min(self.delay, left)
        self.retries += 1
        logger.warning(
            "%s: Redis failed (%s: %s); retry %d in %.1f s",
            self.what, type(error).__name__, error, self.retries, wait,
        )  # fmt: skip
        self.delay = min(self.delay * 2, MAX_DELAY_S)
        return wait
