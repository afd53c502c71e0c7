"""Redis clients for the broker and the result backend that a worker with hundreds of threads
can share: a bounded pool threads wait on, and one client object instead of one per command.

Two things kombu and Celery do that cost a tier worker with hundreds of in-flight calls (found by
``chordal bench``, docs/performance.md):

* redis-py 8's plain pools raise ``MaxConnectionsError`` once every connection is busy, so a
  burst of threads that each ack, store a result or check a cancellation failed tasks. A
  blocking pool makes a thread wait for a free connection instead. Its size is
  ``CHORDAL_REDIS_CONNECTIONS`` (default: one per thread, and 32 to spare). A smaller cap
  keeps fewer idle connections but costs CPU: at 500 calls in flight, a cap of 32 made each
  call ~2.5 ms dearer (threads waiting and waking) and saved ~5 kB per call.
* kombu's Redis channel builds a new ``redis.Redis`` object for every publish, ack and
  unacked-index update (``Channel.conn_or_acquire``), ~50 µs each, several times per task. A
  client over a pool is thread-safe, so one per channel serves them all.

Both classes only change how connections are pooled; what is sent to Redis is the same, so a
plain Celery producer or worker shares queues and results with them.
:func:`workers.config.celery_config` selects them for ``redis://`` and ``rediss://`` URLs.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any

import redis
from celery.backends.redis import RedisBackend
from kombu.transport import redis as kombu_redis

# How long a thread waits for a free connection before the command fails. A wait this long
# means Redis itself is stuck; a refused connection still fails at once.
POOL_WAIT_S = 20.0
REDIS_SCHEMES = ("redis", "rediss")
BACKEND_CLASS = "workers.redis_pools:BoundedRedisBackend"
TRANSPORT_CLASS = "workers.redis_pools:BoundedTransport"


def blocking_pool(plain: redis.ConnectionPool) -> redis.BlockingConnectionPool:
    """A pool like ``plain`` (same server, options and cap) where a thread waits for a free
    connection instead of failing."""
    pool: redis.BlockingConnectionPool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
        max_connections=plain.max_connections,
        timeout=POOL_WAIT_S,
        connection_class=plain.connection_class,
        **plain.connection_kwargs,
    )
    return pool


class BoundedChannel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel with a bounded blocking pool and one reused synchronous client."""

    _sync_client: redis.Redis | None = None

    def _get_pool(self, asynchronous: bool = False) -> redis.ConnectionPool:
        plain: redis.ConnectionPool = super()._get_pool(asynchronous=asynchronous)
        # The consumer's BRPOP/pub-sub connections (asynchronous) are few and owned by its loop.
        return plain if asynchronous else blocking_pool(plain)

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Any:
        """The given client, else this channel's one synchronous client (thread-safe)."""
        if client:
            yield client
            return
        cached = self._sync_client
        # kombu drops and rebuilds its pools after a fork or a failed connection check.
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._sync_client = self._create_client()
        yield cached


class BoundedTransport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport on :class:`BoundedChannel`."""

    Channel = BoundedChannel


class BoundedRedisBackend(RedisBackend):  # type: ignore[misc]
    """Celery's Redis result backend on a bounded blocking pool (``redis_max_connections``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("connection_pool", partial(redis.BlockingConnectionPool,
                                                     timeout=POOL_WAIT_S))  # fmt: skip
        super().__init__(*args, **kwargs)


def is_redis_url(url: str | None) -> bool:
    """Whether ``url`` names a Redis (or Valkey) server these classes can serve."""
    return bool(url) and str(url).partition("://")[0].lower() in REDIS_SCHEMES
