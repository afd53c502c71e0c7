"""Taking a message and recording it as held in one step (``workers.fetch``)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Message, Queue

from workers import recovery
from workers.fetch import UNREADABLE_KEY, wake_key
from workers.recovery import Heartbeat, held_key

QUEUE = "tier.fast"
T0 = 1_000_000.0


@pytest.fixture
def worker_a(as_worker: Callable[[str], None]) -> str:
    as_worker("A")
    return "A"


def _publish(app: Celery, job_id: str, *, priority: int | None = None) -> None:
    app.send_task("chordal.agent", args=({"agent": "a", "input": "x"},), task_id=job_id,
                  queue=QUEUE, priority=priority)  # fmt: skip


def _consumer(connection: Connection, received: list[Message]) -> Consumer:
    consumer = Consumer(
        connection.default_channel,
        [Queue(QUEUE, routing_key=QUEUE)],
        callbacks=[lambda _body, message: received.append(message)],
        accept=["json"],
    )
    consumer.consume()
    return consumer


def _drain(connection: Connection, received: list[Message], count: int) -> None:
    for _ in range(20):
        if len(received) >= count:
            return
        try:
            connection.drain_events(timeout=1)
        except TimeoutError:
            continue
    raise AssertionError(f"received {len(received)} of {count}")


def test_a_worker_killed_as_its_fetch_is_answered_leaves_the_message_held(
    app: Celery, connect: Callable[[], redis.Redis], worker_a: str
) -> None:
    client = connect()
    received: list[Message] = []
    # Given: a queued message, and worker A consuming its queue
    _publish(app, "job-1")
    connection = app.connection_for_write()
    try:
        _consumer(connection, received)
        channel = connection.default_channel

        # When: A sends its fetch and dies before reading the answer (the answer is lost)
        connection.transport.cycle._register_BRPOP(channel)
        assert channel._in_poll
        channel.client.connection.disconnect()
        channel._in_poll = None
    finally:
        connection.release()

    # Then: the message is off the queue but recorded as A's: nothing can lose it
    assert received == []
    assert client.llen(QUEUE) == 0
    (tag,) = client.hkeys(held_key("A"))
    entry = json.loads(client.hget("unacked", tag))
    assert entry[0]["headers"]["id"] == "job-1"
    assert entry[1:] == ["", QUEUE]
    assert client.zscore("unacked_index", tag) is not None

    # ...and once A is dead, a live worker gives it back to its queue, waking a consumer
    recovery.beat(client, "A", now=T0)
    client.delete(wake_key(QUEUE))
    restorer = Heartbeat(app=app, broker=client, interval_s=5, dead_after_s=30,
                         max_deliveries=5, worker="B", dead_letter=lambda *a: None)  # fmt: skip
    assert [(r.worker, r.restored) for r in restorer.tick(now=T0 + 31)] == [("A", 1)]
    (back,) = client.lrange(QUEUE, 0, -1)
    assert json.loads(back)["headers"]["id"] == "job-1"
    assert client.llen(wake_key(QUEUE)) == 1


def test_a_fetched_message_is_delivered_recorded_once_and_acked(
    app: Celery, connect: Callable[[], redis.Redis], worker_a: str
) -> None:
    client = connect()
    received: list[Message] = []
    connection = app.connection_for_write()
    try:
        _consumer(connection, received)
        # Given: an idle consumer waiting on its queue's wake list
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.2)

        # When: a message is published, and the consumer drains
        _publish(app, "job-2")
        _drain(connection, received, 1)

        # Then: it arrived held by A, and the ack clears every record of it
        (message,) = received
        assert message.headers["id"] == "job-2"
        assert client.hkeys(held_key("A")) == [message.delivery_tag.encode()]
        message.ack()
        assert client.hlen("unacked") == 0
        assert client.zcard("unacked_index") == 0
        assert client.hlen(held_key("A")) == 0
    finally:
        connection.release()


def test_the_first_priority_list_is_fetched_first(
    app: Celery, connect: Callable[[], redis.Redis], worker_a: str
) -> None:
    connect()
    received: list[Message] = []
    # Given: a message at kombu's priority 9, then one at priority 0 (Redis: 0 comes first)
    _publish(app, "p9", priority=9)
    _publish(app, "p0", priority=0)
    connection = app.connection_for_write()
    try:
        # When: a consumer fetches both
        _consumer(connection, received)
        _drain(connection, received, 2)
    finally:
        connection.release()

    # Then: as with kombu's BRPOP, the priority-0 list was read first
    assert [m.headers["id"] for m in received] == ["p0", "p9"]


def test_an_unreadable_message_is_set_aside_and_the_next_one_delivered(
    app: Celery, connect: Callable[[], redis.Redis], worker_a: str
) -> None:
    client = connect()
    received: list[Message] = []
    # Given: something that is not a kombu envelope at the head of the queue, then a job
    client.rpush(QUEUE, b"\xff not json")
    _publish(app, "job-3")
    connection = app.connection_for_write()
    try:
        # When: a consumer fetches
        _consumer(connection, received)
        _drain(connection, received, 1)
        for message in received:
            message.ack()
    finally:
        connection.release()

    # Then: the job was delivered; the unreadable message kept aside, not lost, not held
    assert [m.headers["id"] for m in received] == ["job-3"]
    assert client.lrange(UNREADABLE_KEY, 0, -1) == [b"\xff not json"]
    assert client.llen(QUEUE) == 0
    assert client.hlen("unacked") == 0


def test_every_publish_leaves_a_wake_token(app: Celery, connect: Callable[[], redis.Redis]) -> None:
    client = connect()
    for n in range(3):
        _publish(app, f"job-{n}")
    assert client.llen(wake_key(QUEUE)) == 3
    assert client.llen(QUEUE) == 3


def test_wake_tokens_of_a_burst_go_once_the_queue_is_empty(
    app: Celery, connect: Callable[[], redis.Redis], worker_a: str
) -> None:
    client = connect()
    received: list[Message] = []
    # Given: a burst of three messages, three wake tokens
    for n in range(3):
        _publish(app, f"burst-{n}")
    assert client.llen(wake_key(QUEUE)) == 3
    connection = app.connection_for_write()
    try:
        # When: a consumer takes them all and finds the queue empty
        _consumer(connection, received)
        _drain(connection, received, 3)
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.3)
        for message in received:
            message.ack()
    finally:
        connection.release()

    # Then: no token is left to wake it for messages it already took
    assert client.llen(wake_key(QUEUE)) == 0


def test_a_message_without_a_routing_key_is_recorded_not_lost(
    app: Celery, connect: Callable[[], redis.Redis], worker_a: str
) -> None:
    client = connect()
    received: list[Message] = []
    # Given: a queued message whose delivery_info has nulls (another producer's)
    _publish(app, "nulls")
    raw = json.loads(client.rpop(QUEUE))
    raw["properties"]["delivery_info"] = {"exchange": None, "routing_key": None}
    client.rpush(QUEUE, json.dumps(raw))
    connection = app.connection_for_write()
    try:
        # When: a consumer fetches it
        _consumer(connection, received)
        _drain(connection, received, 1)

        # Then: it is delivered, and recorded as held while it runs
        assert [m.headers["id"] for m in received] == ["nulls"]
        assert client.hget(held_key("A"), received[0].delivery_tag) == b""
        received[0].ack()
    finally:
        connection.release()
