"""The loop pool: tasks as greenlets on one event loop, waiting without a thread each."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from workers import execution, greenlets
from workers.errors import Cancelled, DeadlineExceeded, WorkerStopping
from workers.execution import EventLoopThread
from workers.greenlets import await_, on_loop_greenlet, run_in_greenlet
from workers.loop_pool import LoopPool


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[EventLoopThread]:
    """A fresh process loop, as a worker has; stopped after the test."""
    fresh = EventLoopThread(name="chordal-test-loop")
    monkeypatch.setattr(execution, "_shared", fresh)
    monkeypatch.setattr(execution, "IN_FLIGHT", execution.InFlight())
    yield fresh
    fresh.stop()


@pytest.fixture
def pool(loop: EventLoopThread) -> Iterator[LoopPool]:
    started = LoopPool(limit=1000)
    started.start()
    yield started
    started.stop()


class Results:
    """What Celery's callback would receive, per task."""

    def __init__(self, expected: int) -> None:
        self.values: list[Any] = []
        self._lock = threading.Lock()
        self._all = threading.Event()
        self.expected = expected

    def __call__(self, value: Any) -> None:
        with self._lock:
            self.values.append(value)
            if len(self.values) == self.expected:
                self._all.set()

    def wait(self) -> list[Any]:
        assert self._all.wait(30), f"{len(self.values)} of {self.expected} tasks ended"
        return self.values


def test_a_task_waits_for_coroutines_and_gets_their_results(loop: EventLoopThread) -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n

    def task(n: int) -> tuple[int, bool]:
        return await_(double(n)) + await_(double(n + 1)), on_loop_greenlet()

    assert loop.run(run_in_greenlet(task, 5), timeout=5) == (22, True)


def test_a_coroutines_error_is_raised_in_the_task(loop: EventLoopThread) -> None:
    async def fail() -> None:
        raise ValueError("boom on the loop")

    def task() -> str:
        try:
            await_(fail())
        except ValueError as exc:
            return f"caught {exc}"
        return "not raised"

    assert loop.run(run_in_greenlet(task), timeout=5) == "caught boom on the loop"


def test_await_outside_a_task_greenlet_is_refused() -> None:
    assert not on_loop_greenlet()
    coroutine = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="loop pool"):
        await_(coroutine)
    coroutine.close()


def test_tasks_wait_together_on_one_thread(pool: LoopPool) -> None:
    # Given: 300 tasks that each wait until all 300 are waiting
    count = 300
    everyone = asyncio.Event()
    waiting: list[int] = []
    threads: set[str] = set()

    async def wait_for_all() -> None:
        waiting.append(1)
        if len(waiting) == count:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), timeout=20)

    def task(n: int) -> int:
        threads.add(threading.current_thread().name)
        await_(wait_for_all())
        return n

    results = Results(count)
    before = threading.active_count()

    # When
    for n in range(count):
        pool.apply_async(task, args=(n,), callback=results)

    # Then: all were in flight at once, on the loop's thread, and no thread was started
    assert sorted(results.wait()) == list(range(count))
    assert threads == {"chordal-test-loop"}
    assert threading.active_count() == before


def test_sleep_in_a_task_lets_the_others_run(pool: LoopPool) -> None:
    # Given: one task sleeping while another must run to wake it
    woken = threading.Event()
    results = Results(2)

    def sleeper() -> bool:
        for _ in range(100):
            if woken.is_set():
                return True
            greenlets.sleep(0.05)
        return False

    # When
    pool.apply_async(sleeper, callback=results)
    pool.apply_async(woken.set, callback=results)

    # Then
    assert True in results.wait()


def test_a_cancelled_call_raises_cancelled_and_the_task_goes_on(pool: LoopPool) -> None:
    # Given: a task whose call is cancelled as its job is
    results = Results(1)
    in_call = threading.Event()

    async def long_call() -> str:
        in_call.set()
        await asyncio.sleep(30)
        return "answered"

    def task() -> str:
        try:
            execution.run(long_call(), job_id="job-1")
        except Cancelled:
            # The next wait of the same task is not cancelled with the call.
            return execution.run(asyncio.sleep(0, result="went on"))
        return "not cancelled"

    pool.apply_async(task, callback=results)
    assert in_call.wait(10)

    # When
    execution.shared_loop().call_soon(lambda: execution.IN_FLIGHT.cancel("job-1"))

    # Then
    assert results.wait() == ["went on"]


def test_a_bound_call_raises_deadline_exceeded(pool: LoopPool) -> None:
    results = Results(1)

    def task() -> str:
        try:
            execution.run(asyncio.sleep(30), job_id="job-2", bound_s=0.05)
        except DeadlineExceeded:
            return "deadline"
        return "ran to the end"

    pool.apply_async(task, callback=results)

    assert results.wait() == ["deadline"]


def test_stop_calls_makes_a_call_raise_worker_stopping(
    pool: LoopPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execution, "STOPPING", threading.Event())
    results = Results(1)
    in_call = threading.Event()

    async def long_call() -> None:
        in_call.set()
        await asyncio.sleep(30)

    def task() -> str:
        try:
            execution.run(long_call(), job_id="job-3")
        except WorkerStopping:
            return "stopped"
        return "ran to the end"

    pool.apply_async(task, callback=results)
    assert in_call.wait(10)

    execution.stop_calls()

    assert results.wait() == ["stopped"]


def test_stop_waits_for_the_tasks_in_flight(loop: EventLoopThread) -> None:
    # Given: a task waiting on the loop
    pool = LoopPool(limit=10)
    pool.start()
    release = threading.Event()
    ended: list[str] = []

    def task() -> None:
        await_(asyncio.to_thread(release.wait, 10))
        ended.append("ended")

    pool.apply_async(task, callback=lambda _: None)
    stopper = threading.Thread(target=pool.stop)
    stopper.start()

    # When: the stop is asked while the task runs
    stopper.join(0.3)
    still_waiting = stopper.is_alive()
    release.set()
    stopper.join(10)

    # Then
    assert still_waiting
    assert not stopper.is_alive()
    assert ended == ["ended"]
    assert pool.info["in-flight"] == 0
