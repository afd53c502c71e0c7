"""Queue state per tier, read straight from the broker: how many messages wait, and how long.

The router spills a job to another tier when one is saturated, and the autoscaling exporter
scales each tier's pool on its backlog; both read :class:`QueueState`.

**Redis.** With priorities, kombu splits a queue into one list per priority step (by default
``tier.fast``, ``tier.fast\\x06\\x163``, ``…6`` and ``…9``); the depth is the sum of their
lengths, read with the channel's own ``priority_steps``, ``sep`` and ``global_keyprefix``. Each
list is pushed at the head and popped at the tail, so its tail is the next message served and,
barring redeliveries, the oldest. A message records no enqueue time of its own (Celery's
headers and kombu's properties carry none; the delivery tag is a random UUID), so Chordal
producers stamp one: ``apply_async(..., headers=enqueue_stamp())``, or from a
``before_task_publish`` receiver with ``headers.update(enqueue_stamp())`` to cover retries and
replaced tasks too. The age is that of the oldest stamped tail; it is ``None`` (unknown) when
some waiting tail carries no stamp, and ``0.0`` when nothing waits. Stamps are wall-clock
times, so producer clock skew shows up in the age (clamped at zero).

**RabbitMQ.** The depth comes from a passive ``queue.declare`` (messages ready, not those a
consumer holds unacked); a queue not declared yet has depth 0. AMQP cannot show a message
without consuming it, so the age is always ``None``; the management plugin's
``head_message_timestamp`` would need the AMQP ``timestamp`` property, which Celery does not
set.

All queues are read in one round trip on Redis and one per queue on RabbitMQ;
:class:`CachedQueueReader` keeps the result for a short TTL so the router does not hit the
broker per job.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import redis
from kombu import Connection

from workers.errors import ConfigurationError
from workers.tls import redis_ssl

ENQUEUED_AT_HEADER = "chordal_enqueued_at"
NOT_FOUND = 404


@dataclass(frozen=True)
class QueueState:
    """One queue's backlog: messages waiting, and the oldest one's age (None when unknown)."""

    queue: str
    depth: int
    oldest_age_s: float | None


def enqueue_stamp(*, now: float | None = None) -> dict[str, float]:
    """The message header a producer adds so readers can tell how long a message waited."""
    return {ENQUEUED_AT_HEADER: time.time() if now is None else now}


def read_queues(
    broker: str | Connection, queues: Sequence[str], *, now: float | None = None
) -> list[QueueState]:
    """The state of each of ``queues``, in order, read from ``broker`` (a URL or a Connection).

    A Connection is used as is and left open; a URL gets a connection of its own, closed after.
    ``now`` (Unix time) is what ages are measured against; raises ConfigurationError for a
    transport other than Redis or AMQP.
    """
    if isinstance(broker, str):
        with Connection(broker, ssl=redis_ssl(broker) or False) as connection:
            return _read(connection, queues, now=now)
    return _read(broker, queues, now=now)


def _read(connection: Connection, queues: Sequence[str], *, now: float | None) -> list[QueueState]:
    driver = connection.transport.driver_type
    if driver == "redis":
        return _read_redis(connection, queues, now=time.time() if now is None else now)
    if driver == "amqp":
        return _read_amqp(connection, queues)
    msg = f"cannot read queue state from a {driver!r} broker; Chordal reads Redis and AMQP"
    raise ConfigurationError(msg)


def priority_lists(queue: str, *, steps: Sequence[int], sep: str) -> list[str]:
    """The Redis lists kombu keeps ``queue`` in, one per priority step.

    >>> priority_lists("tier.fast", steps=[0, 3, 6, 9], sep="\\x06\\x16")[:2]
    ['tier.fast', 'tier.fast\\x06\\x163']
    """
    names = (queue if step == 0 else f"{queue}{sep}{step}" for step in steps)
    return list(dict.fromkeys(names))


def _read_redis(connection: Connection, queues: Sequence[str], *, now: float) -> list[QueueState]:
    channel = connection.default_channel
    prefix: str = channel.global_keyprefix or ""
    lists = {
        queue: priority_lists(queue, steps=channel.priority_steps, sep=channel.sep)
        for queue in queues
    }
    # kombu's own client prefixes only the commands kombu uses; prefix every key here instead.
    client = redis.Redis(connection_pool=channel.pool)
    with client.pipeline(transaction=False) as pipe:
        for names in lists.values():
            for name in names:
                pipe.llen(prefix + name)
                pipe.lindex(prefix + name, -1)
        replies = iter(pipe.execute())
    states = []
    for queue, names in lists.items():
        depth = 0
        tails = []
        for _ in names:
            length, tail = next(replies), next(replies)
            depth += length
            if length:
                tails.append(_enqueued_at(tail))
        states.append(QueueState(queue, depth, _oldest_age(tails, now=now)))
    return states


def _enqueued_at(raw: bytes | str | None) -> float | None:
    # A Redis message is kombu's JSON envelope; Celery's headers sit under "headers".
    if raw is None:
        return None
    try:
        return float(json.loads(raw)["headers"][ENQUEUED_AT_HEADER])
    except (ValueError, TypeError, KeyError):
        return None


def _oldest_age(stamps: Sequence[float | None], *, now: float) -> float | None:
    if not stamps:
        return 0.0
    known = [stamp for stamp in stamps if stamp is not None]
    if len(known) < len(stamps):
        return None
    return max(0.0, now - min(known))


def _read_amqp(connection: Connection, queues: Sequence[str]) -> list[QueueState]:
    states = []
    channel = connection.channel()
    try:
        for queue in queues:
            try:
                depth = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except connection.channel_errors as exc:
                if getattr(exc, "reply_code", None) != NOT_FOUND:
                    raise
                # The broker closes a channel on a failed passive declare; carry on in a new one.
                depth = 0
                channel = connection.channel()
            states.append(QueueState(queue, depth, None))
    finally:
        channel.close()
    return states


class CachedQueueReader:
    """Queue states for the router, read from the broker at most once every ``ttl_s``.

    It keeps one broker connection open (its own when given a URL, closed by :meth:`close`);
    safe to share between threads. A broker error propagates, and the next call reconnects::

        with CachedQueueReader(settings.broker_url, [tier.queue for tier in Tier]) as reader:
            fast = reader.states()["tier.fast"]
    """

    def __init__(
        self,
        broker: str | Connection,
        queues: Sequence[str],
        *,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not queues:
            raise ValueError("CachedQueueReader needs at least one queue to read")
        if not ttl_s >= 0:
            raise ValueError(f"ttl_s cannot be negative ({ttl_s})")
        self._url = broker if isinstance(broker, str) else None
        self._connection: Connection | None = None if isinstance(broker, str) else broker
        self.queues = tuple(queues)
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, QueueState] = {}
        self._read_at: float | None = None

    def states(self) -> dict[str, QueueState]:
        """Each queue's state by name, at most ``ttl_s`` old."""
        with self._lock:
            now = self._clock()
            if self._read_at is None or not 0 <= now - self._read_at < self.ttl_s:
                self._states = {state.queue: state for state in self._read()}
                self._read_at = now
            return dict(self._states)

    def _read(self) -> list[QueueState]:
        if self._connection is None:
            self._connection = Connection(self._url, ssl=redis_ssl(self._url) or False)
        try:
            return _read(self._connection, self.queues, now=None)
        except Exception:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        if self._url is not None and self._connection is not None:
            self._connection.release()
            self._connection = None

    def close(self) -> None:
        """Close the connection this reader opened (a Connection passed in stays open)."""
        with self._lock:
            self._drop_connection()

    def __enter__(self) -> CachedQueueReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
