"""Client.submit: idempotency claims (pending, published, conflicts) and the bound on a submit
while the broker or Redis is away, against a real Valkey."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.claims import claim_key, fingerprint
from agents.client import Client
from agents.job import parse_job
from chordal.broker import EmbeddedBroker, free_port
from workers.app import create_app
from workers.errors import BrokerUnavailable, IdempotencyConflict, RetryLater
from workers.settings import Settings
from workers.watchdog import DEADLINES_KEY

BOUND_S = 2.0  # submit_timeout_s in these tests
SLACK_S = 0.5  # what a loaded 2-core machine may add to a measured bound


def job(**fields: Any) -> dict[str, Any]:
    """A valid one-agent job, with overrides."""
    return {"agent": "summarizer", "input": "Summarise the queue.", **fields}


def settings(broker_url: str, backend_url: str | None = None) -> Settings:
    return Settings(broker_url=broker_url, result_backend=backend_url, submit_timeout_s=BOUND_S)


def urls(scheme: str, port: int) -> tuple[str, str]:
    """Broker and result store on ``port`` (RabbitMQ's URL for amqp, results still on Redis)."""
    redis_url = f"redis://127.0.0.1:{port}/0"
    return (f"amqp://guest:guest@127.0.0.1:{port}//" if scheme == "amqp" else redis_url), redis_url


@pytest.fixture
def store(connect: Callable[[], redis.Redis]) -> redis.Redis:
    """The emptied server, read directly."""
    return connect()


@pytest.fixture
def client(valkey: EmbeddedBroker, store: redis.Redis) -> Iterator[Client]:
    producer = Client(settings=settings(valkey.url))
    yield producer
    producer.app.close()


def queued(store: redis.Redis) -> list[str]:
    """The job ids on the router queue (kombu keeps one list per priority step)."""
    ids = []
    for name in store.keys("router*"):
        if store.type(name) == b"list":
            ids += [json.loads(raw)["headers"]["id"] for raw in store.lrange(name, 0, -1)]
    return ids


def claim_of(store: redis.Redis, tenant: str, key: str) -> dict[str, str]:
    raw = store.hgetall(claim_key(tenant, key))
    return {k.decode(): v.decode() for k, v in raw.items()}


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_repeat_returns_the_first_id_and_enqueues_the_job_once(
    client: Client, store: redis.Redis
) -> None:
    # Given a job submitted under a key
    first = client.submit(job(idempotency_key="order-1"))

    # When the same job is submitted again
    again = client.submit(job(idempotency_key="order-1"))

    # Then: one id, one message, and a claim marked published with the job's fingerprint
    assert again == first
    assert queued(store) == [first]
    message = parse_job(job(idempotency_key="order-1")).model_dump(mode="json")
    assert claim_of(store, "default", "order-1") == {
        "job_id": first,
        "fingerprint": fingerprint(message),
        "state": "published",
    }
    assert 0 < store.ttl(claim_key("default", "order-1")) <= client.settings.idempotency_ttl_s


def test_jobs_that_validate_alike_share_a_fingerprint(client: Client, store: redis.Redis) -> None:
    # Given a job submitted with a named complexity
    first = client.submit(job(idempotency_key="k", complexity="low"))

    # When the same job comes with the number the name stands for
    again = client.submit(job(idempotency_key="k", complexity=0.2))

    # Then it is the same job
    assert again == first
    assert queued(store) == [first]


def test_another_job_under_the_same_key_is_a_conflict(client: Client, store: redis.Redis) -> None:
    # Given a job submitted under a key
    first = client.submit(job(idempotency_key="order-1"))

    # When another job (another input, then another priority) comes under the same key
    with pytest.raises(IdempotencyConflict) as other_input:
        client.submit(job(idempotency_key="order-1", input="Something else."))
    with pytest.raises(IdempotencyConflict):
        client.submit(job(idempotency_key="order-1", priority=9))

    # Then it is refused, naming the field, and nothing more is enqueued
    assert other_input.value.field == "idempotency_key"
    assert first in str(other_input.value)
    assert queued(store) == [first]


def test_tenant_and_key_are_kept_apart_whatever_colons_they_hold(
    client: Client, store: redis.Redis
) -> None:
    # Given tenant "a" with key "b:c", which "tenant:key" would join as "a:b:c"
    first = client.submit(job(tenant="a", idempotency_key="b:c"))

    # When tenant "a:b" submits another job under key "c", which would join the same way
    second = client.submit(job(tenant="a:b", idempotency_key="c", input="Another text."))

    # Then both are accepted as two jobs with two claims
    assert second != first
    assert sorted(queued(store)) == sorted([first, second])
    assert claim_of(store, "a", "b:c")["job_id"] == first
    assert claim_of(store, "a:b", "c")["job_id"] == second


def test_a_pending_claim_is_completed_by_a_repeat_under_the_same_id(
    client: Client, store: redis.Redis
) -> None:
    # Given a producer that claimed a key and died before publishing
    data = job(idempotency_key="order-7")
    message = parse_job(data).model_dump(mode="json")
    key = claim_key("default", "order-7")
    left = client.claims.claim(key, "job-of-the-dead", fingerprint(message), None)
    assert left.created
    assert queued(store) == []

    # When the job is submitted again
    job_id = client.submit(data)

    # Then it is published under the claimed id, and the claim is marked published
    assert job_id == "job-of-the-dead"
    assert queued(store) == ["job-of-the-dead"]
    assert claim_of(store, "default", "order-7")["state"] == "published"


def test_a_keyed_submit_makes_two_round_trips_and_a_repeat_one(
    client: Client, store: redis.Redis
) -> None:
    # Given a client whose claim store counts the packets it sends (one per round trip)
    sent: list[bytes] = []
    pool = client.claims.client.connection_pool

    class Counting(pool.connection_class):  # type: ignore[name-defined,misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sent.append(b"")
            super().send_packed_command(command, check_health)

    pool.connection_class = Counting
    client.submit(job(idempotency_key="warm-up"))  # loads the scripts (EVALSHA, then EVAL)
    sent.clear()

    # When a new key is submitted, then repeated
    client.submit(job(idempotency_key="fresh"))
    new_key = len(sent)
    client.submit(job(idempotency_key="fresh"))

    # Then: claim and mark, then only the claim
    assert new_key == 2
    assert len(sent) - new_key == 1


def test_a_submit_without_a_key_touches_no_claim(client: Client, store: redis.Redis) -> None:
    # When jobs without a key are submitted
    ids = [client.submit(job()) for _ in range(3)]

    # Then they are enqueued and the claim store was never built (so it made no round trip)
    assert sorted(queued(store)) == sorted(ids)
    assert "claims" not in vars(client)
    assert store.keys("chordal:idempotency:*") == []


def test_a_deadline_is_registered_once_with_its_grace(client: Client, store: redis.Redis) -> None:
    # Given a keyed job with a deadline, and one without a key
    deadline_at = time.time() + 60
    keyed = client.submit(job(idempotency_key="d", deadline_at=deadline_at))

    # When the keyed one is repeated and the other submitted
    client.submit(job(idempotency_key="d", deadline_at=deadline_at))
    plain = client.submit(job(deadline_at=deadline_at))

    # Then each job is watched once, until its deadline plus the grace period
    watched = dict(store.zrange(DEADLINES_KEY, 0, -1, withscores=True))
    grace = client.settings.watchdog_grace_s
    assert watched == {
        keyed.encode(): pytest.approx(deadline_at + grace),
        plain.encode(): pytest.approx(deadline_at + grace),
    }


def test_a_failed_publish_leaves_no_claim_and_no_deadline(
    valkey: EmbeddedBroker, store: redis.Redis
) -> None:
    # Given results on the live server and a broker whose port refuses connections
    producer = Client(settings=settings(f"redis://127.0.0.1:{free_port()}/0", valkey.url))
    data = job(idempotency_key="order-9", deadline_at=time.time() + 60)

    # When the job is submitted
    try:
        seconds, error = timed(lambda: producer.submit(data))
    finally:
        producer.app.close()

    # Then BrokerUnavailable within the bound, and neither the claim nor a deadline is left
    assert isinstance(error, BrokerUnavailable)
    assert seconds <= BOUND_S + SLACK_S
    assert store.exists(claim_key("default", "order-9")) == 0
    assert store.zcard(DEADLINES_KEY) == 0


def test_a_publish_that_timed_out_keeps_its_claim_for_the_retry(
    valkey: EmbeddedBroker, store: redis.Redis
) -> None:
    # Given results on the live server and a broker that accepts connections and never answers
    # (a publish that times out may have reached the broker all the same)
    data = job(idempotency_key="order-8")
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        producer = Client(settings=settings(url, valkey.url))
        try:
            seconds, error = timed(lambda: producer.submit(data))
        finally:
            producer.app.close()
    left = claim_of(store, "default", "order-8")

    # When the submit is retried once the broker answers
    retry = Client(settings=settings(valkey.url))
    try:
        job_id = retry.submit(data)
    finally:
        retry.app.close()

    # Then the first attempt gave up within the bound leaving its claim pending, and the retry
    # published that same id (workers run one job id once)
    assert isinstance(error, BrokerUnavailable)
    assert seconds <= BOUND_S + SLACK_S
    assert left["state"] == "pending"
    assert job_id == left["job_id"]
    assert queued(store) == [job_id]
    assert claim_of(store, "default", "order-8")["state"] == "published"


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
@pytest.mark.parametrize("key", [None, "order-5"])
def test_a_refused_port_raises_broker_unavailable_within_the_bound(
    scheme: str, key: str | None
) -> None:
    # Given a client whose broker and result store refuse connections
    producer = Client(settings=settings(*urls(scheme, free_port())))

    # When a job is submitted
    try:
        seconds, error = timed(lambda: producer.submit(job(idempotency_key=key)))
    finally:
        producer.app.close()

    # Then BrokerUnavailable, a RetryLater, within the bound
    assert isinstance(error, BrokerUnavailable)
    assert isinstance(error, RetryLater)
    assert seconds <= BOUND_S + SLACK_S


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
@pytest.mark.parametrize("key", [None, "order-6"])
def test_a_server_that_never_answers_is_given_up_within_the_bound(
    scheme: str, key: str | None
) -> None:
    # Given a port that accepts connections (the kernel's backlog) and never answers
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        producer = Client(settings=settings(*urls(scheme, silent.getsockname()[1])))

        # When a job is submitted
        try:
            seconds, error = timed(lambda: producer.submit(job(idempotency_key=key)))
        finally:
            producer.app.close()

    # Then BrokerUnavailable within the bound
    assert isinstance(error, BrokerUnavailable)
    assert seconds <= BOUND_S + SLACK_S


def test_a_killed_broker_is_given_up_within_the_bound_and_served_once_back(
    tmp_path: Path,
) -> None:
    # Given a client that has submitted to its own broker, which then crashes
    broker = EmbeddedBroker(tmp_path).start()
    producer = Client(settings=settings(broker.url))
    try:
        first = producer.submit(job(idempotency_key="order-3"))
        broker.kill()

        # When jobs are submitted, with a key and without
        refused = [timed(lambda k=key: producer.submit(job(idempotency_key=k)))
                   for key in (None, "order-4")]  # fmt: skip
        broker.start()
        after = producer.submit(job(idempotency_key="order-4"))
        repeat = producer.submit(job(idempotency_key="order-3"))
        plain = producer.submit(job())
        store = redis.Redis.from_url(broker.url)
        on_queue = queued(store)
        store.close()
    finally:
        producer.app.close()
        broker.stop()

    # Then each is refused within the bound, and the same client submits again once it is back
    for seconds, error in refused:
        assert isinstance(error, BrokerUnavailable)
        assert seconds <= BOUND_S + SLACK_S
    assert repeat == first
    assert sorted(on_queue) == sorted([first, after, plain])


def test_a_result_reaches_get_without_a_subscription_at_submit(
    valkey: EmbeddedBroker, client: Client
) -> None:
    # Given a submitted job (the client's backend does not subscribe when it publishes)
    job_id = client.submit(job())
    worker = create_app(Settings(broker_url=valkey.url))

    # When a worker stores its result while the producer already waits on it
    timer = threading.Timer(0.3, worker.backend.mark_as_done, args=(job_id, {"output": "done"}))
    timer.start()
    try:
        result = client.app.AsyncResult(job_id).get(timeout=10)
    finally:
        timer.join()
        worker.close()

    # Then the producer gets it
    assert result == {"output": "done"}
