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

The queues and results stay kombu's and Celery's own, so a plain Celery producer or worker shares
them with these classes; the channel fetches with :mod:`workers.fetch` (one step to take and
record a message) and so pushes a wake token with every publish.
:func:`workers.config.celery_config` selects them for ``redis://`` and ``rediss://`` URLs.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from functools import cached_property, partial
from typing import Any

import redis
from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps

from workers import recovery
from workers.fetch import RecordedFetch, wake_key
from workers.observability.redaction import redact_value
from workers.redis_retry import retry_redis
from workers.settings import get_settings

# How long a thread waits for a free connection before the command fails. A wait this long
# means Redis itself is stuck; a refused connection still fails at once.
POOL_WAIT_S = 20.0
REDIS_SCHEMES = ("redis", "rediss")
BACKEND_CLASS = "workers.redis_pools:BoundedRedisBackend"
TRANSPORT_CLASS = "workers.redis_pools:BoundedTransport"


# Write a task's state unless that would move a finished task back (see BoundedRedisBackend);
# publish it as Celery's backend does, for clients waiting on the result.
_WRITE_UNLESS_FINISHED = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' then
    local status = meta['status']
    if status == 'SUCCESS' then return 0 end
    if ARGV[2] == '0' and (status == 'FAILURE' or status == 'REVOKED') then return 0 end
  end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


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


class HeldQoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's ack emulation, also recording which worker process holds each message.

    The tag goes into ``chordal:held:<worker>`` in the same ``MULTI`` that puts the message in
    kombu's ``unacked`` hash, and leaves it in the same ``MULTI`` that acks, rejects or gives it
    back: :mod:`workers.recovery` can then give a dead worker's messages back, and only its.
    Processes that do not beat (producers, tools) record nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _LIVE.add(self)

    def append(self, message: Any, delivery_tag: str) -> None:
        """Record a delivered message as unacknowledged, and held by this worker.

        A message :class:`workers.fetch.RecordedFetch` took is recorded already. Otherwise (a
        plain kombu fetch) the message is off its queue and recorded only here, in a second
        step; if Redis goes away in between, kombu's own append raises and the message is lost.
        This one waits Redis out (``CHORDAL_REDIS_RETRY_S``).
        """
        if getattr(self.channel, "_prerecorded", None) == delivery_tag:
            # Fetched by workers.fetch, which recorded it in the same step.
            kombu_virtual.QoS.append(self, message, delivery_tag)
            return
        holder = recovery.worker_id()
        delivery = message.delivery_info
        entry = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        delivered_at = time.time()

        def record() -> None:
            with self.pipe_or_acquire() as pipe:
                pipe.zadd(self.unacked_index_key, {delivery_tag: delivered_at})
                pipe.hset(self.unacked_key, delivery_tag, entry)
                if holder is not None:
                    pipe.hset(recovery.held_key(holder), delivery_tag, delivery["routing_key"])
                pipe.execute()

        retry_redis(record, budget_s=get_settings().redis_retry_s, what="recording a delivery")
        # virtual.QoS.append: the in-memory record of delivered messages, skipping the Redis
        # QoS's own append (which would write the two kombu entries a second time).
        kombu_virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        holder = recovery.worker_id()
        return pipe if holder is None else pipe.hdel(recovery.held_key(holder), delivery_tag)


_LIVE: weakref.WeakSet[HeldQoS] = weakref.WeakSet()


def live_tags() -> set[str]:
    """The delivery tags this process's open channels hold now. A tag its held hash lists that
    none of them holds belongs to a channel that died without giving it back."""
    tags: set[str] = set()
    for qos in list(_LIVE):
        if getattr(qos.channel, "closed", False):
            continue
        for _ in range(3):  # the consumer thread may grow the dict while we read it
            try:
                tags.update(list(qos._delivered))
                break
            except RuntimeError:
                continue
    return tags


class BoundedChannel(RecordedFetch, kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel with a bounded blocking pool and one reused synchronous client;
    it takes and records each message in one step (:class:`workers.fetch.RecordedFetch`),
    records who holds it (:class:`HeldQoS`) and counts deliveries."""

    QoS = HeldQoS
    _sync_client: redis.Redis | None = None

    def _do_restore_message(
        self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        # Every way a message goes back (a dead worker's, a lost connection's, the visibility
        # timeout's, a reject) counts one more delivery: past CHORDAL_MAX_DELIVERIES it is
        # dead-lettered instead of run again (workers.recovery, agents.base).
        headers = payload.get("headers") if isinstance(payload, dict) else None
        if isinstance(headers, dict):
            headers[recovery.DELIVERIES_HEADER] = recovery.deliveries(headers) + 1
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        try:
            queues = self._lookup(exchange, routing_key)
        except Exception:  # an unbound exchange: kombu's restore has logged it
            return
        self._wake(*(wake_key(queue) for queue in queues), pipe=pipe)

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
        try:
            pool = self.pool
        except AttributeError as exc:
            # The connection is being torn down (after a broker restart): a closing channel's
            # give-back finds no connection details. Said as a connection error, kombu and
            # Celery ignore it and reconnect, where an AttributeError would kill the worker;
            # what the channel held is given back by the heartbeat (workers.recovery).
            raise redis.ConnectionError("the channel's connection is closed") from exc
        # kombu drops and rebuilds its pools after a fork or a failed connection check.
        if cached is None or cached.connection_pool is not pool:
            cached = self._sync_client = self._create_client()
        yield cached


class BoundedTransport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport on :class:`BoundedChannel`."""

    Channel = BoundedChannel


class BoundedRedisBackend(RedisBackend):  # type: ignore[misc]
    """Celery's Redis result backend on a bounded blocking pool (``redis_max_connections``),
    whose writes never move a finished task back.

    Celery reads a task's state and then writes the new one, skipping the write only over
    SUCCESS. A redelivered router could thus overwrite its agent task's FAILURE with ROUTED, or
    a late copy a cancel's REVOKED with a progress state. Here one Lua script compares and
    writes: a progress state (ROUTED, PENDING, RETRY...) never replaces a finished one, and
    nothing replaces SUCCESS. It also saves Celery's read: one round trip per write, not two.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("connection_pool", partial(redis.BlockingConnectionPool,
                                                     timeout=POOL_WAIT_S))  # fmt: skip
        super().__init__(*args, **kwargs)
        self._write = self.client.register_script(_WRITE_UNLESS_FINISHED)

    @cached_property
    def _chord_part_return_script(self) -> Callable[..., Any]:
        # A chord member's join is one Lua script (deduplicated by task id, so running it again
        # is safe). Celery does not retry it: a Redis blip there failed the member after its
        # result was stored, and with it the whole team ("Dependency ... raised
        # ConnectionError"). Joined through the blip instead.
        script = RedisBackend._chord_part_return_script.func(self)

        def join(keys: Any, args: Any, client: Any = None) -> Any:
            return retry_redis(
                lambda: script(keys=keys, args=args, client=client),
                budget_s=get_settings().redis_retry_s, what="joining a chord",
            )  # fmt: skip

        return join

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **_: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        if state in states.EXCEPTION_STATES and get_settings().store_redacted:
            # A failure's message and traceback quote the provider's answer, and so the prompt.
            meta = redact_value(meta)
        meta["task_id"] = bytes_to_str(task_id)
        self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        return result

    def _set_with_state(self, key: Any, value: Any, state: str) -> Any:
        expires = self.failure_expires if state == states.FAILURE else self.expires
        ready = int(state in states.READY_STATES)
        return self.ensure(self._write_unless_finished, (key, value, ready, expires))

    def _write_unless_finished(self, key: Any, value: Any, ready: int, expires: Any) -> bool:
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend")
        seconds = int(
            expires.total_seconds() if hasattr(expires, "total_seconds") else expires or 0
        )
        return bool(self._write(keys=[key], args=[value, ready, seconds]))


def is_redis_url(url: str | None) -> bool:
    """Whether ``url`` names a Redis (or Valkey) server these classes can serve."""
    return bool(url) and str(url).partition("://")[0].lower() in REDIS_SCHEMES
