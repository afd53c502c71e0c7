"""Cancelling calls in flight on a worker's event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path

import pytest
import redis

from chordal.broker import EmbeddedBroker
from workers import execution
from workers.cancellation import CANCEL_CHANNEL, listen, request_cancel
from workers.errors import Cancelled
from workers.supervise import supervise


def test_cancelling_a_job_stops_its_calls_and_raises_cancelled() -> None:
    # Given: two calls of job "a" and one of job "b" running on the shared loop
    started = threading.Barrier(4)
    outcomes: dict[str, list[str]] = {"a": [], "b": []}

    async def slow() -> str:
        await asyncio.sleep(30)
        return "finished"

    def call(job: str) -> None:
        started.wait()
        try:
            outcomes[job].append(execution.run(slow(), job_id=job, timeout=10))
        except Cancelled:
            outcomes[job].append("cancelled")

    threads = [threading.Thread(target=call, args=(job,)) for job in ("a", "a", "b")]
    for thread in threads:
        thread.start()
    started.wait()
    _wait_until(lambda: execution.shared_loop().submit(_count("a")).result() == 2)

    # When
    stopped = execution.shared_loop().submit(_cancel("a")).result()
    threads[0].join(5)
    threads[1].join(5)

    # Then: job a's calls stopped; job b's call is still running
    assert stopped == 2
    assert outcomes["a"] == ["cancelled", "cancelled"]
    assert threads[2].is_alive()
    execution.shared_loop().submit(_cancel("b")).result()
    threads[2].join(5)
    assert outcomes["b"] == ["cancelled"]


async def _cancel(job: str) -> int:
    return execution.IN_FLIGHT.cancel(job)


async def _count(job: str) -> int:
    return len(execution.IN_FLIGHT._tasks.get(job, ()))


def test_finished_calls_are_forgotten() -> None:
    async def quick() -> int:
        return 7

    assert execution.run(quick(), job_id="done-job") == 7
    assert execution.shared_loop().submit(_count("done-job")).result() == 0


def test_cancelling_an_unknown_job_stops_nothing() -> None:
    assert execution.shared_loop().submit(_cancel("nobody")).result() == 0


def _wait_until(condition, *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def supervised_listener() -> Iterator[Callable[[str], None]]:
    """Start the cancel listener under supervision on the shared loop, as a worker does; every
    one started is cancelled afterwards."""
    running: list[Future[None]] = []

    def start(url: str) -> None:
        loop = execution.shared_loop()
        factory = partial(listen, url, execution.IN_FLIGHT)
        supervised = supervise("cancel listener", factory, min_backoff_s=0.05, max_backoff_s=0.2)
        running.append(loop.start(supervised))

    yield start
    for future in running:
        future.cancel()


class CallInFlight:
    """One call of ``job_id`` running on the shared loop from a thread, as a task's would."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.outcome: list[str] = []
        self.thread = threading.Thread(target=self._call, daemon=True)
        self.thread.start()
        _wait_until(lambda: execution.shared_loop().submit(_count(job_id)).result() == 1)

    def _call(self) -> None:
        async def slow() -> str:
            await asyncio.sleep(30)
            return "finished"

        try:
            self.outcome.append(execution.run(slow(), job_id=self.job_id, timeout=25))
        except Cancelled:
            self.outcome.append("cancelled")

    def stopped(self, *, within_s: float = 5.0) -> bool:
        self.thread.join(within_s)
        return self.outcome == ["cancelled"]


def _subscribers(client: redis.Redis) -> int:
    return int(dict(client.pubsub_numsub(CANCEL_CHANNEL))[CANCEL_CHANNEL.encode()])


def test_the_listener_is_back_after_its_connection_is_killed(
    connect: Callable[[], redis.Redis], valkey: EmbeddedBroker, supervised_listener
) -> None:
    # Given: a supervised listener, subscribed, and a call of job "killed-1" in flight
    client = connect()
    supervised_listener(valkey.url)
    _wait_until(lambda: _subscribers(client) == 1)
    call = CallInFlight("killed-1")

    # When: Redis drops the listener's connection, and the job is cancelled once it is back
    assert client.client_kill_filter(_type="pubsub") == 1
    _wait_until(lambda: _subscribers(client) == 1)
    request_cancel(client, "killed-1", ttl_s=60)

    # Then: the cancel reached the call
    assert call.stopped()


def test_the_listener_is_back_after_the_server_restarts(
    tmp_path: Path, supervised_listener
) -> None:
    # Given: a supervised listener on a server of its own, and a call of job "restart-1"
    with EmbeddedBroker(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        supervised_listener(server.url)
        _wait_until(lambda: _subscribers(client) == 1)
        call = CallInFlight("restart-1")

        # When: the server crashes and comes back on the same port
        server.kill()
        time.sleep(1.0)
        server.start()
        _wait_until(lambda: _subscribers(client) == 1, timeout=15)
        request_cancel(client, "restart-1", ttl_s=60)

        # Then
        assert call.stopped()
        client.close()


def test_a_cancel_announced_while_nobody_listened_still_stops_the_call(
    connect: Callable[[], redis.Redis], valkey: EmbeddedBroker, supervised_listener
) -> None:
    # Given: a call in flight, and its job cancelled while no listener was subscribed
    client = connect()
    _wait_until(lambda: _subscribers(client) == 0)
    call = CallInFlight("unheard-1")
    request_cancel(client, "unheard-1", ttl_s=60)
    assert not call.stopped(within_s=0.2)

    # When: the listener (re)subscribes
    supervised_listener(valkey.url)

    # Then: it finds the job marked and stops the call
    assert call.stopped()
