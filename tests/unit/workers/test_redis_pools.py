"""Bounded Redis pools for the broker and the result backend (``workers.redis_pools``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
import redis
from celery import Celery, signals
from kombu import Connection, Queue

from chordal.broker import EmbeddedBroker
from workers.app import create_app
from workers.redis_pools import BoundedChannel, BoundedRedisBackend, is_redis_url
from workers.settings import Settings

THREADS = 120
CAP = 4


@pytest.fixture
def app(valkey: EmbeddedBroker, connect: Callable[[], redis.Redis]) -> Iterator[Celery]:
    connect()  # empties the database
    application = create_app(
        Settings(broker_url=valkey.url, result_backend=valkey.url, redis_connections=CAP)
    )
    yield application
    application.close()


def _in_threads(work: Callable[[int], None], count: int = THREADS) -> None:
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        start.wait()
        try:
            work(n)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


def test_result_backend_waits_for_a_connection_instead_of_opening_more(app: Celery) -> None:
    backend = app.backend
    assert isinstance(backend, BoundedRedisBackend)

    _in_threads(lambda n: backend.store_result(f"task-{n}", {"n": n}, "SUCCESS"))

    pool = backend.client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert len(pool._connections) <= CAP  # the pool's own count of what it opened
    assert app.AsyncResult(f"task-{THREADS - 1}").result == {"n": THREADS - 1}


def test_broker_channel_reuses_one_client_and_a_bounded_pool(app: Celery) -> None:
    queue = Queue("bounded-test", routing_key="bounded-test")
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, BoundedChannel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second

        def publish(n: int) -> None:
            with app.producer_or_acquire() as producer:
                producer.publish({"n": n}, routing_key=queue.routing_key, declare=[queue])

        _in_threads(publish)
        pool = channel.pool
        assert len(pool._connections) <= CAP

        bound = queue(channel)
        received = []
        while (message := bound.get()) is not None:
            received.append(message.payload["n"])
            message.ack()
    assert sorted(received) == list(range(THREADS))


def test_a_plain_kombu_consumer_reads_what_the_bounded_transport_sent(
    app: Celery, valkey: EmbeddedBroker
) -> None:
    # Only pooling differs: a producer or worker without these classes shares the queues.
    queue = Queue("plain-test", routing_key="plain-test")
    with app.producer_or_acquire() as producer:
        producer.publish({"hello": "world"}, routing_key=queue.routing_key, declare=[queue])
    with Connection(valkey.url) as plain:
        message = queue(plain.default_channel).get()
        assert message is not None
        assert message.payload == {"hello": "world"}
        message.ack()


def test_a_rebuilt_pool_gets_a_new_client(app: Celery) -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as before:
            pass
        channel._disconnect_pools()  # what kombu does after a fork
        with channel.conn_or_acquire() as after:
            assert after is not before
            assert after.ping()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", True),
        ("rediss://host:6380/0", True),
        ("amqp://guest@localhost//", False),
        ("", False),
    ],
)
def test_only_redis_urls_get_the_bounded_classes(url: str, expected: bool) -> None:
    assert is_redis_url(url) is expected


def _backends_seen_by_threads(app: Celery, count: int = 4) -> set[int]:
    seen: set[int] = set()
    _in_threads(lambda _n: seen.add(id(app.backend)), count=count)
    return seen


def test_a_workers_threads_share_one_result_backend(app: Celery) -> None:
    # Celery sends celeryd_init as a worker starts (chordal worker and celery worker alike).
    worker = SimpleNamespace(app=app)
    signals.celeryd_init.send(sender="test@host", conf=app.conf, instance=worker, options={})

    assert len(_backends_seen_by_threads(app)) == 1


def test_a_producers_threads_keep_their_own_result_backend(app: Celery) -> None:
    # Waiting on a result reads the backend's one pub/sub connection: not shared across threads.
    assert len(_backends_seen_by_threads(app)) == 4


@pytest.mark.parametrize("redacted", [True, False])
def test_a_failure_is_stored_redacted_when_asked(
    app: Celery, monkeypatch: pytest.MonkeyPatch, redacted: bool
) -> None:
    settings = Settings(store_redacted=redacted)
    monkeypatch.setattr("workers.redis_pools.get_settings", lambda: settings)
    error = ValueError("provider said: write to ada@example.com")

    app.backend.store_result("failed-job", error, "FAILURE", traceback="ada@example.com line 1")

    stored = app.backend.client.get(app.backend.get_key_for_task("failed-job")).decode()
    assert ("ada@example.com" in stored) is not redacted
    assert ("[EMAIL]" in stored) is redacted
    # The client still rebuilds the error, of the same type.
    assert isinstance(app.AsyncResult("failed-job").result, ValueError)
