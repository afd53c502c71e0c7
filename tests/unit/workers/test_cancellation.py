"""Cancelling calls in flight on a worker's event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from workers import execution
from workers.errors import Cancelled


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
