"""One event loop per worker process, shared by every thread."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from workers import execution
from workers.execution import EventLoopThread, shared_loop


@pytest.fixture
def make_loop():
    """Start EventLoopThreads; every one is stopped after the test."""
    loops: list[EventLoopThread] = []

    def make() -> EventLoopThread:
        loop = EventLoopThread(name="chordal-test-loop")
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.stop()


@pytest.fixture
def fresh_shared(monkeypatch: pytest.MonkeyPatch):
    """A clean process-wide loop slot; the loop created in the test is stopped afterwards."""
    monkeypatch.setattr(execution, "_shared", None)
    yield
    if execution._shared is not None:
        execution._shared.stop()


async def loop_id() -> int:
    await asyncio.sleep(0)
    return id(asyncio.get_running_loop())


def test_coroutines_from_many_threads_share_one_loop(make_loop) -> None:
    # Given
    loop = make_loop()

    # When: 50 threads each run a coroutine at the same time
    with ThreadPoolExecutor(max_workers=50) as pool:
        ids = list(pool.map(lambda _: loop.run(loop_id(), timeout=10), range(50)))

    # Then
    assert len(ids) == 50
    assert len(set(ids)) == 1


def test_the_loop_is_not_the_callers(make_loop) -> None:
    loop = make_loop()

    async def thread_name() -> str:
        return threading.current_thread().name

    assert loop.run(thread_name(), timeout=5) == "chordal-test-loop"


def test_coroutines_run_concurrently(make_loop) -> None:
    # Given: two coroutines that each wait for the other
    loop = make_loop()
    first, second = asyncio.Event(), asyncio.Event()

    async def meet(mine: asyncio.Event, theirs: asyncio.Event) -> str:
        mine.set()
        await asyncio.wait_for(theirs.wait(), timeout=5)
        return "met"

    # When
    futures = [loop.submit(meet(first, second)), loop.submit(meet(second, first))]

    # Then
    assert [future.result(timeout=10) for future in futures] == ["met", "met"]


def test_result_is_returned(make_loop) -> None:
    loop = make_loop()

    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert loop.run(add(2, 3), timeout=5) == 5


def test_exception_propagates_to_the_caller(make_loop) -> None:
    loop = make_loop()

    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom from the loop")

    with pytest.raises(ValueError, match="boom from the loop"):
        loop.run(fail(), timeout=5)


def test_timeout_raises_and_cancels_the_coroutine(make_loop) -> None:
    # Given
    loop = make_loop()
    started, cancelled = threading.Event(), threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    # When
    with pytest.raises(TimeoutError):
        loop.run(slow(), timeout=0.2)

    # Then
    assert started.is_set()
    assert cancelled.wait(timeout=5), "the coroutine never saw CancelledError"


def test_loop_keeps_working_after_a_timeout(make_loop) -> None:
    loop = make_loop()
    with pytest.raises(TimeoutError):
        loop.run(asyncio.sleep(30), timeout=0.05)

    assert isinstance(loop.run(loop_id(), timeout=5), int)


def test_stop_ends_the_thread_and_closes_the_loop() -> None:
    loop = EventLoopThread()
    loop.run(loop_id(), timeout=5)

    loop.stop()

    assert not loop._thread.is_alive()
    assert loop._loop.is_closed()


def test_shared_loop_is_one_object(fresh_shared) -> None:
    first = shared_loop()

    assert shared_loop() is first


def test_shared_loop_is_one_object_across_threads(fresh_shared) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        loops = list(pool.map(lambda _: shared_loop(), range(32)))

    assert len({id(loop) for loop in loops}) == 1


def test_module_run_uses_the_shared_loop(fresh_shared) -> None:
    expected = id(shared_loop()._loop)

    assert execution.run(loop_id(), timeout=5) == expected
