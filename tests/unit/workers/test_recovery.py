"""Giving a dead worker's messages back (``workers.recovery``), against a real Valkey."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from kombu import Connection, Queue

from workers import recovery
from workers.recovery import Heartbeat, held_key

QUEUE = "tier.fast"
T0 = 1_000_000.0


def _publish(app: Celery, job_id: str, **headers: Any) -> None:
    app.send_task("chordal.agent", args=({"agent": "a", "input": "x"},), task_id=job_id,
                  queue=QUEUE, headers=headers)  # fmt: skip


def _take(app: Celery, connections: list[Connection]) -> Any:
    # Delivered and never acknowledged, with the connection left open: as a worker that was
    # killed mid-task leaves it (closing the channel would give it back at once).
    connection = app.connection_for_write()
    connections.append(connection)
    message = Queue(QUEUE, routing_key=QUEUE)(connection.default_channel).get()
    assert message is not None
    return message


def _queued(client: redis.Redis) -> list[dict[str, Any]]:
    import json

    return [json.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]


def _restorer(app: Celery, client: redis.Redis, name: str, **kwargs: Any) -> Heartbeat:
    return Heartbeat(app=app, broker=client, interval_s=5, dead_after_s=30, max_deliveries=5,
                     worker=name, **kwargs)  # fmt: skip


def test_a_dead_workers_messages_go_back_to_their_queue_once(
    app: Celery, connect: Callable[[], redis.Redis], as_worker: Callable[[str], None]
) -> None:
    client = connect()
    connections: list[Connection] = []
    try:
        # Given: worker A beat at T0 and took a message it never acknowledged
        _publish(app, "job-1")
        as_worker("A")
        recovery.beat(client, "A", now=T0)
        message = _take(app, connections)
        assert client.hkeys(held_key("A")) == [message.delivery_tag.encode()]
        assert _queued(client) == []

        # When: two live workers beat 31 s later
        dead_letters: list[str] = []
        as_worker("B")
        first = _restorer(app, client, "B", dead_letter=lambda *a: dead_letters.append(a[2]))
        second = _restorer(app, client, "C", dead_letter=lambda *a: dead_letters.append(a[2]))
        restored = first.tick(now=T0 + 31) + second.tick(now=T0 + 31)

        # Then: the message is back on its queue, once, counted as a second delivery
        assert [(r.worker, r.restored) for r in restored] == [("A", 1)]
        (back,) = _queued(client)
        assert back["headers"]["id"] == "job-1"
        assert back["headers"]["redelivered"] is True
        assert back["headers"][recovery.DELIVERIES_HEADER] == 2
        assert client.hlen("unacked") == 0
        assert not client.exists(held_key("A"))
        assert client.zscore(recovery.WORKERS_KEY, "A") is None
        assert dead_letters == []
    finally:
        for connection in connections:
            connection.release()


def test_a_live_workers_messages_are_never_touched(
    app: Celery, connect: Callable[[], redis.Redis], as_worker: Callable[[str], None]
) -> None:
    client = connect()
    connections: list[Connection] = []
    try:
        # Given: worker A holds a message and beat 25 s ago (dead after 30 s)
        _publish(app, "job-2")
        as_worker("A")
        recovery.beat(client, "A", now=T0)
        _take(app, connections)
        recovery.beat(client, "A", now=T0 + 6)

        # When: another worker beats at T0 + 31
        as_worker("B")
        restored = _restorer(app, client, "B", dead_letter=lambda *a: None).tick(now=T0 + 31)

        # Then: nothing moved
        assert restored == []
        assert _queued(client) == []
        assert client.hlen(held_key("A")) == 1
    finally:
        for connection in connections:
            connection.release()


def test_a_message_given_back_too_often_is_dead_lettered_instead(
    app: Celery, connect: Callable[[], redis.Redis], as_worker: Callable[[str], None]
) -> None:
    client = connect()
    connections: list[Connection] = []
    try:
        # Given: a message on its fifth delivery, held by a worker that died
        _publish(app, "job-3", **{recovery.DELIVERIES_HEADER: 5})
        as_worker("A")
        recovery.beat(client, "A", now=T0)
        _take(app, connections)

        # When: a live worker finds A dead
        kept: list[tuple[Any, ...]] = []
        as_worker("B")
        restored = _restorer(app, client, "B", dead_letter=lambda *a: kept.append(a)).tick(
            now=T0 + 31
        )

        # Then: it went to the dead letters, not back to the queue, and nothing is left held
        assert [(r.restored, r.dead_lettered) for r in restored] == [(0, 1)]
        ((payload, queue, reason),) = kept
        assert payload["headers"]["id"] == "job-3"
        assert queue == QUEUE
        assert "delivered 5 times" in reason
        assert _queued(client) == []
        assert client.hlen("unacked") == 0
    finally:
        for connection in connections:
            connection.release()


def test_an_ack_forgets_the_message_held(
    app: Celery, connect: Callable[[], redis.Redis], as_worker: Callable[[str], None]
) -> None:
    client = connect()
    connections: list[Connection] = []
    try:
        _publish(app, "job-4")
        as_worker("A")
        message = _take(app, connections)
        assert client.hlen(held_key("A")) == 1
        message.ack()
        assert client.hlen(held_key("A")) == 0
        assert client.hlen("unacked") == 0
    finally:
        for connection in connections:
            connection.release()


def test_a_worker_that_does_not_beat_records_nothing(
    app: Celery, connect: Callable[[], redis.Redis], as_worker: Callable[[str], None]
) -> None:
    client = connect()
    connections: list[Connection] = []
    try:
        _publish(app, "job-5")
        message = _take(app, connections)
        assert client.keys(f"{recovery.HELD_PREFIX}*") == []
        message.ack()
    finally:
        for connection in connections:
            connection.release()


def test_deliveries_are_read_from_chordal_or_rabbitmq_headers() -> None:
    assert recovery.deliveries({}) == 1
    assert recovery.deliveries({recovery.DELIVERIES_HEADER: 3}) == 3
    assert recovery.deliveries({"x-delivery-count": 2}) == 3
