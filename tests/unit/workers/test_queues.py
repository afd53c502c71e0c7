"""Queue depth and oldest-message age per tier, read from a real broker."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from functools import partial

import pytest
import redis
from celery import Celery
from celery.signals import before_task_publish
from kombu import Connection, Exchange, Queue

import workers.app
from chordal.broker import EmbeddedBroker
from workers.app import create_app
from workers.errors import ConfigurationError
from workers.queues import (
    ENQUEUED_AT_HEADER,
    CachedQueueReader,
    QueueState,
    enqueue_stamp,
    priority_lists,
    read_queues,
)
from workers.settings import Settings
from workers.tiers import AGENT_TASK, QUALITY_TIERS, Tier, transport_priority

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
KOMBU_STEPS = [0, 3, 6, 9]
KOMBU_SEP = "\x06\x16"
T0 = 1_700_000_000.0
TIER_QUEUES = [tier.queue for tier in QUALITY_TIERS]
FAST = Tier.FAST.queue


@pytest.fixture
def redis_client(valkey: EmbeddedBroker) -> Iterator[redis.Redis]:
    """A client on an emptied database."""
    with redis.Redis.from_url(valkey.url) as client:
        client.flushdb()
        yield client


@pytest.fixture
def celery_app(valkey: EmbeddedBroker, redis_client: redis.Redis) -> Iterator[Celery]:
    """Chordal's Celery app on the test broker; nothing consumes its queues."""
    app = create_app(Settings(broker_url=valkey.url))
    yield app
    app.close()


def publish(
    app: Celery, queue: str, *, priority: int, stamp: float | None = None, bare: bool = False
) -> None:
    """Send one agent task to ``queue`` at Chordal ``priority`` (9 = most urgent); ``bare``:
    as a plain Celery producer would, without Chordal's enqueue stamp."""
    send = partial(
        app.send_task,
        AGENT_TASK,
        args=[{"job": "test"}],
        queue=queue,
        priority=transport_priority(priority, broker_url=str(app.conf.broker_url)),
        headers=None if stamp is None else enqueue_stamp(now=stamp),
        ignore_result=True,
    )
    if not bare:
        send()
        return
    before_task_publish.disconnect(workers.app._stamp)
    try:
        send()
    finally:
        before_task_publish.connect(workers.app._stamp)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_depth_sums_every_priority_list(
    celery_app: Celery, redis_client: redis.Redis, valkey: EmbeddedBroker
) -> None:
    # Given messages at several priorities on one tier, and one on another
    for priority in (9, 9, 6, 4, 0):
        publish(celery_app, FAST, priority=priority)
    publish(celery_app, Tier.BALANCED.queue, priority=5)
    # Then kombu spread them over several lists: one list alone would miss some
    lists = priority_lists(FAST, steps=KOMBU_STEPS, sep=KOMBU_SEP)
    assert [redis_client.llen(name) for name in lists] == [2, 2, 0, 1]

    # When the queues are read, each depth counts every list
    states = read_queues(valkey.url, TIER_QUEUES, now=T0)

    assert [(state.queue, state.depth) for state in states] == [
        (FAST, 5),
        (Tier.BALANCED.queue, 1),
        (Tier.PREMIUM.queue, 0),
    ]


def test_oldest_age_spans_every_priority_list(celery_app: Celery, valkey: EmbeddedBroker) -> None:
    # Given the oldest message waiting in the least urgent list
    publish(celery_app, FAST, priority=0, stamp=T0)
    publish(celery_app, FAST, priority=5, stamp=T0 + 10)
    publish(celery_app, FAST, priority=9, stamp=T0 + 20)
    publish(celery_app, FAST, priority=9, stamp=T0 + 25)
    publish(celery_app, FAST, priority=0, stamp=T0 + 28)

    [state] = read_queues(valkey.url, [FAST], now=T0 + 30)

    assert state == QueueState(FAST, depth=5, oldest_age_s=30.0)


def test_age_is_unknown_without_a_stamp_and_zero_when_empty(
    celery_app: Celery, valkey: EmbeddedBroker
) -> None:
    publish(celery_app, FAST, priority=9, stamp=T0)
    publish(celery_app, FAST, priority=0, bare=True)

    fast, premium = read_queues(valkey.url, [FAST, Tier.PREMIUM.queue], now=T0 + 5)

    assert fast == QueueState(FAST, depth=2, oldest_age_s=None)
    assert premium == QueueState(Tier.PREMIUM.queue, depth=0, oldest_age_s=0.0)


def test_age_never_negative_under_clock_skew(celery_app: Celery, valkey: EmbeddedBroker) -> None:
    publish(celery_app, FAST, priority=5, stamp=T0 + 3)

    [state] = read_queues(valkey.url, [FAST], now=T0)

    assert state.oldest_age_s == 0.0


def test_chordal_stamps_every_message_it_publishes(
    celery_app: Celery, valkey: EmbeddedBroker
) -> None:
    # No stamp given: the receiver workers.app connects adds one.
    publish(celery_app, FAST, priority=5)

    [state] = read_queues(valkey.url, [FAST])

    assert state.depth == 1
    assert state.oldest_age_s is not None
    assert 0 <= state.oldest_age_s < 5


def test_reads_through_a_connection_and_leaves_it_open(
    celery_app: Celery, valkey: EmbeddedBroker
) -> None:
    publish(celery_app, FAST, priority=9, stamp=T0)
    with Connection(valkey.url) as connection:
        first = read_queues(connection, [FAST], now=T0 + 1)
        publish(celery_app, FAST, priority=9, stamp=T0)
        second = read_queues(connection, [FAST], now=T0 + 2)

    assert [first[0].depth, second[0].depth] == [1, 2]
    assert second[0].oldest_age_s == 2.0


def test_honours_the_transport_key_prefix(
    valkey: EmbeddedBroker, redis_client: redis.Redis
) -> None:
    options = {"global_keyprefix": "chordal-test:"}
    with Connection(valkey.url, transport_options=options) as connection:
        producer = connection.Producer()
        for priority in (0, 9):
            producer.publish(
                {"n": priority}, routing_key="q", priority=priority, headers=enqueue_stamp(now=T0)
            )
        [state] = read_queues(connection, ["q"], now=T0 + 7)

    assert redis_client.llen("chordal-test:q") == 1
    assert state == QueueState("q", depth=2, oldest_age_s=7.0)


def test_cached_reader_reads_at_most_once_per_ttl(
    celery_app: Celery, valkey: EmbeddedBroker
) -> None:
    clock = FakeClock()
    publish(celery_app, FAST, priority=9)
    with CachedQueueReader(valkey.url, TIER_QUEUES, ttl_s=1.0, clock=clock) as reader:
        assert reader.states()[FAST].depth == 1
        publish(celery_app, FAST, priority=9)

        clock.now += 0.9
        assert reader.states()[FAST].depth == 1
        clock.now += 0.2
        states = reader.states()

    assert states[FAST].depth == 2
    assert states[Tier.PREMIUM.queue].depth == 0


def test_rejects_bad_construction_and_unknown_transports() -> None:
    with pytest.raises(ValueError, match="queue"):
        CachedQueueReader("redis://127.0.0.1:1/0", [])
    with pytest.raises(ValueError, match="ttl_s"):
        CachedQueueReader("redis://127.0.0.1:1/0", [FAST], ttl_s=-1)
    with pytest.raises(ConfigurationError, match="memory"):
        read_queues("memory://", [FAST])


def test_enqueue_stamp_is_a_header_of_unix_time() -> None:
    before = time.time()
    stamp = enqueue_stamp()
    assert set(stamp) == {ENQUEUED_AT_HEADER}
    assert before <= stamp[ENQUEUED_AT_HEADER] <= time.time()
    assert enqueue_stamp(now=T0) == {ENQUEUED_AT_HEADER: T0}


def _rabbitmq_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def rabbit_queue() -> Iterator[tuple[Connection, Queue]]:
    """A uniquely named priority queue on the local RabbitMQ, deleted afterwards."""
    if not _rabbitmq_listening():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    name = f"chordal-test-{uuid.uuid4().hex[:12]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, max_priority=10)
    with Connection(RABBITMQ_URL) as connection:
        bound = queue(connection.default_channel)
        bound.declare()
        try:
            yield connection, bound
        finally:
            bound.delete()
            bound.exchange.delete()


@pytest.mark.rabbitmq
def test_rabbitmq_depth_from_a_passive_declare(rabbit_queue: tuple[Connection, Queue]) -> None:
    connection, queue = rabbit_queue
    producer = connection.Producer()
    for priority in (0, 5, 9):
        producer.publish(
            {"n": priority},
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            priority=priority,
            headers=enqueue_stamp(),
        )
    missing = f"chordal-missing-{uuid.uuid4().hex[:12]}"

    # The broker counts published messages asynchronously; give it a moment.
    deadline = time.monotonic() + 5
    while True:
        states = read_queues(RABBITMQ_URL, [missing, queue.name])
        if states[1].depth == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    # A queue not declared yet is empty, and does not stop the others from being read
    assert states == [QueueState(missing, 0, None), QueueState(queue.name, 3, None)]
