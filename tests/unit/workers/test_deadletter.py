"""The dead-letter list (``workers.deadletter``): bounded records, replay, purge, and a poison
message that is never acknowledged unrecorded, against a real broker."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu import Exchange, Producer, Queue

from chordal.broker import EmbeddedBroker, free_port
from workers.config import celery_config
from workers.deadletter import (
    REDELIVER_PAUSE_S,
    NotReplayable,
    dead_letter,
    find_dead_letter,
    purge_dead_letter,
    purge_dead_letters,
    read_dead_letters,
    record_dead_letter,
    record_payload,
    replay_dead_letter,
    replay_dead_letters,
)
from workers.errors import BrokerUnavailable
from workers.settings import Settings


def _app(broker_url: str, backend_url: str) -> Celery:
    # A bare app (no Chordal tasks to import) with Chordal's configuration and consumer.
    application = Celery("deadletter-test")
    settings = Settings(broker_url=broker_url, result_backend=backend_url)
    application.config_from_object(celery_config(settings))
    return application


@pytest.fixture
def queue() -> str:
    # A fresh name per test: kombu remembers, per process, which bindings it declared, and the
    # database is emptied between tests.
    return f"deadletter-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def app(valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]) -> Iterator[Celery]:
    connect()  # empties the database
    application = _app(valkey.url, valkey.url)
    yield application
    application.close()


def _limits(**overrides: Any) -> Settings:
    return Settings(dead_letter_max=3, dead_letter_retention_days=1.0, **overrides)


def _message(queue: str, **properties: Any) -> dict[str, Any]:
    # What the consumer records for a message as it came off ``queue``, besides body and headers.
    return {
        "content_type": properties.pop("content_type", "application/json"),
        "content_encoding": properties.pop("content_encoding", "utf-8"),
        "properties": properties,
        "exchange": queue,
    }


def _queued(app: Celery, queue: str) -> list[Any]:
    # Every message now in ``queue``, taken off it.
    with app.connection_for_write() as connection:
        exchange = Exchange(queue, type="direct")
        bound = Queue(queue, exchange, routing_key=queue)(connection.default_channel)
        bound.declare()
        found = []
        while (message := bound.get(accept=["json", "application/x-python-serialize"])) is not None:
            found.append(message)
            message.ack()
    return found


def test_each_record_is_named_and_the_list_is_bounded_and_expires(
    app: Celery, queue: str, connect: Callable[[], redis.Redis]
) -> None:
    # Given a list that keeps 3 records for a day
    limits = _limits()

    # When 5 messages are dead-lettered
    ids = [
        record_dead_letter(app, reason=f"bad {n}", queue=queue, body=f"body {n}", settings=limits)
        for n in range(5)
    ]

    # Then the 3 newest are kept, newest first, each under its own uuid4 hex id
    records = read_dead_letters(app, limit=10, settings=limits)
    assert [r["reason"] for r in records] == ["bad 4", "bad 3", "bad 2"]
    assert [r["id"] for r in records] == ids[:1:-1]
    assert all(uuid.UUID(hex=i).version == 4 and len(i) == 32 for i in ids)
    assert len(set(ids)) == 5
    ttl = connect().ttl(limits.dead_letter_key)
    assert 86_000 < ttl <= 86_400


def test_a_record_that_cannot_be_written_is_reported_not_swallowed(
    valkey: EmbeddedBroker, queue: str
) -> None:
    # Given a result backend (where the list lives) that is down
    down = _app(valkey.url, f"redis://127.0.0.1:{free_port()}/0")
    try:
        # Then the recording call raises; the lenient one says so by returning no id
        with pytest.raises(BrokerUnavailable, match="cannot write the dead-letter record"):
            record_dead_letter(down, reason="bad", queue=queue, body="x")
        assert dead_letter(down, reason="bad", queue=queue, body="x") is None
    finally:
        down.close()


def test_replay_publishes_the_message_as_it_came_then_removes_the_record(
    app: Celery, queue: str
) -> None:
    # Given a dead-lettered message whose body is not even UTF-8
    body = b"\x80\x81 not json"
    headers = {"task": "tests.nothing", "id": "msg-1", "custom": "kept"}
    record_id = record_dead_letter(
        app, reason="cannot decode", queue=queue, body=body, headers=headers,
        message=_message(queue, content_type="application/x-weird",
                         content_encoding="binary", priority=3, correlation_id="msg-1"),
    )  # fmt: skip
    assert find_dead_letter(app, record_id) is not None

    # When it is replayed
    replay = replay_dead_letter(app, record_id)

    # Then the same bytes, headers and properties are back in its queue, and the record is gone
    [message] = _queued(app, queue)
    assert message.body == body
    assert message.content_type == "application/x-weird"
    assert message.headers["custom"] == "kept"
    assert message.headers["id"] == "msg-1"
    assert message.properties["priority"] == 3
    assert message.properties["correlation_id"] == "msg-1"
    assert replay.record["id"] == record_id
    assert replay.task_id == "msg-1"
    assert find_dead_letter(app, record_id) is None


def test_a_task_kept_by_its_arguments_is_sent_again_as_a_new_task(app: Celery, queue: str) -> None:
    # Given a task that failed in its worker, recorded by its arguments (ChordalTask.on_failure)
    args = [{"agent": "summarizer"}, {}]
    record_id = record_dead_letter(
        app, reason="malformed", queue=queue, task="chordal.agent", task_id="job-7",
        body={"args": args, "kwargs": {"failed": []}},
    )  # fmt: skip

    # When it is replayed
    replay = replay_dead_letter(app, record_id)

    # Then Celery's message for the task, with the same arguments, is queued under a new id
    # (the first run's id is done: a copy under it would be dropped)
    [message] = _queued(app, queue)
    assert message.headers["task"] == "chordal.agent"
    assert message.headers["id"] == replay.task_id != "job-7"
    assert message.decode()[:2] == [args, {"failed": []}]
    assert read_dead_letters(app) == []


def test_a_failed_publish_keeps_the_record(valkey: EmbeddedBroker, app: Celery, queue: str) -> None:
    # Given a record, and an app whose broker is down but whose backend holds the list
    message = _message(queue)
    record_id = record_dead_letter(app, reason="bad", queue=queue, body="x", message=message)
    no_broker = _app(f"redis://127.0.0.1:{free_port()}/0", valkey.url)
    no_broker.conf.broker_connection_timeout = 0.5
    try:
        # When a replay cannot publish
        with pytest.raises(Exception, match=r"Connection refused|Error 111"):
            replay_dead_letter(no_broker, record_id)
    finally:
        no_broker.close()

    # Then the record is still there
    assert find_dead_letter(app, record_id) is not None


def test_replay_all_goes_oldest_first_and_keeps_what_holds_no_message(
    app: Celery, queue: str
) -> None:
    # Given two replayable records and one without a queue
    first = record_dead_letter(app, reason="a", queue=queue, body="1", message=_message(queue))
    stray = record_dead_letter(app, reason="b", queue=None, body="2")
    last = record_dead_letter(app, reason="c", queue=queue, body="3", message=_message(queue))

    # When every record is replayed
    done = replay_dead_letters(app)

    # Then the two are queued in their original order, and the stray one is kept with why
    assert done.replayed == [first, last]
    assert list(done.kept) == [stray]
    assert "no queue" in done.kept[stray]
    assert [m.body for m in _queued(app, queue)] == [b"1", b"3"]
    assert [r["id"] for r in read_dead_letters(app)] == [stray]
    with pytest.raises(NotReplayable):
        replay_dead_letter(app, stray)


def test_purge_deletes_one_record_or_all(app: Celery, queue: str) -> None:
    ids = [record_dead_letter(app, reason=str(n), queue=queue, body="x") for n in range(3)]

    assert purge_dead_letter(app, ids[1]) is True
    assert purge_dead_letter(app, ids[1]) is False
    assert [r["id"] for r in read_dead_letters(app)] == [ids[2], ids[0]]
    assert purge_dead_letters(app) == 2
    assert read_dead_letters(app) == []
    with pytest.raises(LookupError):
        replay_dead_letter(app, ids[0])


def _publish_raw(app: Celery, queue: str, body: bytes, headers: dict[str, Any]) -> None:
    with app.connection_for_write() as connection:
        exchange = Exchange(queue, type="direct")
        Queue(queue, exchange, routing_key=queue)(connection.default_channel).declare()
        producer = Producer(connection.default_channel, exchange=exchange)
        producer.publish(
            body, routing_key=queue, serializer=None, content_type="application/json",
            content_encoding="utf-8", headers=headers,
        )  # fmt: skip


def _in_broker(client: redis.Redis, needle: str) -> bool:
    # In a queue or in kombu's unacked hash: anywhere but acknowledged away.
    for key in client.scan_iter():
        kind = client.type(key)
        values = (
            client.lrange(key, 0, -1) if kind == b"list"
            else client.hvals(key) if kind == b"hash" else []
        )  # fmt: skip
        if any(needle.encode() in value for value in values):
            return True
    return False


def _until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.timeout(90)
def test_a_poison_message_waits_in_the_broker_while_its_record_cannot_be_written(
    valkey: EmbeddedBroker, connect: Callable[[], redis.Redis], tmp_path: Path, queue: str
) -> None:
    # Given a worker with the dead-letter consumer whose result backend is down
    broker = connect()
    backend = EmbeddedBroker(tmp_path, port=free_port())
    app = _app(valkey.url, backend.url)
    # One backend for all threads (as Chordal's workers have), so the test can close it.
    app.conf.result_backend_thread_safe = True
    undecodable, unknown = f"undecodable-{uuid.uuid4()}", f"unknown-{uuid.uuid4()}"
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=[queue]):
            # When a body that is not JSON and a task no worker knows arrive
            _publish_raw(app, queue, b"{" + undecodable.encode(), {"marker": undecodable})
            _publish_raw(app, queue, b"[[], {}, {}]", {"task": "tests.no_such", "id": unknown})

            # Then, over several redeliveries, neither is acknowledged away
            time.sleep(3 * REDELIVER_PAUSE_S + 1)
            assert _in_broker(broker, undecodable)
            assert _in_broker(broker, unknown)

            # When the backend comes back
            backend.start()

            # Then both are recorded, once each, and only then leave the broker
            def recorded() -> bool:
                text = json.dumps(read_dead_letters(app, limit=10))
                return undecodable in text and unknown in text

            assert _until(recorded)
            assert _until(lambda: not _in_broker(broker, undecodable))
            assert _until(lambda: not _in_broker(broker, unknown))
            assert len(read_dead_letters(app, limit=10)) == 2
    finally:
        app.backend.client.connection_pool.disconnect()
        app.close()
        backend.stop()


def test_a_message_taken_from_the_broker_as_stored_replays_unchanged(
    app: Celery, queue: str, connect: Callable[[], redis.Redis]
) -> None:
    # Given a task message as kombu's Redis transport stores it (what restore code sees)
    app.send_task("tests.anything", args=[1, "two"], queue=queue, routing_key=queue,
                  task_id="stored-1", priority=2)  # fmt: skip
    broker = connect()
    [key] = [k for k in broker.scan_iter(f"{queue}*") if broker.type(k) == b"list"]
    payload = json.loads(broker.rpop(key))

    # When it is recorded from that payload and replayed
    record_id = record_payload(app, payload, queue=queue, reason="given back too often",
                               exchange=queue)  # fmt: skip
    replay_dead_letter(app, record_id)

    # Then the queue holds the same task message again
    [message] = _queued(app, queue)
    assert message.headers["id"] == "stored-1"
    assert message.headers["task"] == "tests.anything"
    assert message.decode()[:2] == [[1, "two"], {}]
    assert message.properties["priority"] == payload["properties"]["priority"]
    assert message.content_type == "application/json"
