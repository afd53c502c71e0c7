"""Retrying a Redis step through a blip: backoff, the budget, what is not retried, and a real
Valkey that crashes and comes back."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from chordal.broker import EmbeddedBroker
from workers.redis_retry import aretry_redis, retry_redis, retryable

BLIPS: list[Exception] = [
    redis.ConnectionError("Connection refused"),
    redis.TimeoutError("Timeout reading from socket"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
]


def failing(errors: list[Exception], result: str = "done") -> Callable[[], str]:
    """A step that raises ``errors`` one per attempt, then returns ``result``; it keeps count."""
    pending = list(errors)

    def step() -> str:
        step.attempts += 1  # type: ignore[attr-defined]
        if pending:
            raise pending.pop(0)
        return result

    step.attempts = 0  # type: ignore[attr-defined]
    return step


def test_a_blip_is_retried_with_a_doubling_pause_and_logged_once_per_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given: a step that fails three times (refused, timed out, loading), then succeeds
    step = failing(BLIPS)

    # When
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="workers.redis_retry"):
        result = retry_redis(step, budget_s=10, what="parking job-1's result")

    # Then: it ran four times, after 0.1 + 0.2 + 0.4 s of pauses, each retry logged once
    assert (result, step.attempts) == ("done", 4)  # type: ignore[attr-defined]
    assert 0.7 <= time.monotonic() - started < 3
    lines = [r.getMessage() for r in caplog.records]
    assert all(line.startswith("parking job-1's result: Redis failed") for line in lines)
    assert [line.rsplit("retry ", 1)[1] for line in lines] == [
        "1 in 0.1 s",
        "2 in 0.2 s",
        "3 in 0.4 s",
    ]


def test_the_pause_stops_doubling_at_two_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given: a clock that does not move while the retry sleeps, and a Redis down 7 attempts
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    step = failing([redis.ConnectionError("down")] * 7)

    retry_redis(step, budget_s=30, what="x")

    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_it_gives_up_when_the_budget_is_spent() -> None:
    # Given: a Redis that never comes back, and half a second to wait for it
    step = failing([redis.ConnectionError("Connection refused")] * 100)

    started = time.monotonic()
    with pytest.raises(redis.ConnectionError, match="Connection refused") as caught:
        retry_redis(step, budget_s=0.5, what="writing job-1's status")

    # Then: the last error is raised about the budget later, saying what gave up
    assert 0.5 <= time.monotonic() - started < 1.5
    attempts = step.attempts  # type: ignore[attr-defined]
    assert 4 <= attempts <= 6  # 0, 0.1, 0.3, 0.5 s: and one more if the clock was slow
    (note,) = caught.value.__notes__
    assert re.fullmatch(
        rf"writing job-1's status: gave up after {attempts} attempts in \d+\.\d s", note
    )


@pytest.mark.parametrize(
    "error",
    [
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        redis.exceptions.AuthenticationError("invalid username-password pair"),
        redis.exceptions.NoScriptError("NOSCRIPT No matching script"),
        ValueError("not a Redis error"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_that_waiting_cannot_fix_is_raised_at_once(error: Exception) -> None:
    step = failing([error])

    with pytest.raises(type(error)):
        retry_redis(step, budget_s=10, what="x")

    assert step.attempts == 1  # type: ignore[attr-defined]
    assert not retryable(error)


def test_the_async_twin_retries_a_new_awaitable_each_time() -> None:
    step = failing(BLIPS[:2], result="parked")

    async def call() -> str:
        await asyncio.sleep(0)
        return step()

    started = time.monotonic()
    result = asyncio.run(aretry_redis(call, budget_s=10, what="x"))

    assert (result, step.attempts) == ("parked", 3)  # type: ignore[attr-defined]
    assert 0.3 <= time.monotonic() - started < 2


def test_a_negative_budget_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="budget_s must not be negative"):
        retry_redis(failing([redis.ConnectionError("down")]), budget_s=-1, what="x")


@pytest.fixture
def crashing(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A Valkey of this test's own, crashed now and restarted (same port, its data) in 0.5 s."""
    broker = EmbeddedBroker(tmp_path).start()
    redis.Redis.from_url(broker.url).set("kept", "yes")
    broker.kill()
    restart = threading.Timer(0.5, broker.start)
    restart.start()
    yield broker
    restart.join()
    broker.stop()


def test_a_write_waits_for_a_crashed_redis_to_come_back(crashing: EmbeddedBroker) -> None:
    client = redis.Redis.from_url(crashing.url)

    # When: a write is retried while the server is down
    written = retry_redis(lambda: client.set("status", "done"), budget_s=20, what="status")

    # Then: it landed on the restarted server, which kept its data
    assert written
    assert (client.get("status"), client.get("kept")) == (b"done", b"yes")
    client.close()


def test_an_async_write_waits_for_a_crashed_redis_to_come_back(crashing: EmbeddedBroker) -> None:
    async def write() -> bytes | None:
        client = redis.asyncio.Redis.from_url(crashing.url)
        try:
            await aretry_redis(lambda: client.set("status", "done"), budget_s=20, what="status")
            return await client.get("status")
        finally:
            await client.aclose()

    assert asyncio.run(write()) == b"done"
