"""Supervised background loops: a failure is logged with its traceback and the loop restarted
with bounded backoff; a run that lasted resets the backoff; cancelling stops it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from workers.supervise import supervise

LOGGER = "workers.supervise"


class Loop:
    """A background loop that plays a script: each run raises, returns, or runs on (forever or
    for a while, then raises), and records when it started."""

    def __init__(self, script: list[str | float]) -> None:
        self.script = script
        self.starts: list[float] = []
        self.cancelled = False

    async def __call__(self) -> None:
        self.starts.append(asyncio.get_running_loop().time())
        step = self.script[len(self.starts) - 1] if len(self.starts) <= len(self.script) else "run"
        try:
            if step == "fail":
                raise RuntimeError(f"run {len(self.starts)} failed")
            if step == "return":
                return
            if isinstance(step, float):
                await asyncio.sleep(step)
                raise RuntimeError(f"run {len(self.starts)} failed after {step} s")
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


def test_a_failing_loop_is_logged_with_its_traceback_and_restarted_with_growing_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given: a loop that fails four times in a row, then runs on
    loop = Loop(["fail", "fail", "fail", "fail"])

    async def body() -> None:
        task = asyncio.create_task(
            supervise("cancel listener", loop, min_backoff_s=0.01, max_backoff_s=0.04)
        )
        await _until(lambda: len(loop.starts) == 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # When
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _run(body)

    # Then: each failure is logged with its traceback and the wait before the next run, which
    # doubles from the minimum and stops at the maximum
    failures = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in failures] == [logging.ERROR] * 4
    assert [r.restart_in_s for r in failures] == [0.01, 0.02, 0.04, 0.04]
    assert all(r.loop == "cancel listener" for r in failures)
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)
    assert "run 2 failed" in caplog.text
    assert "Traceback" in caplog.text
    # ...and it really waited that long before each restart
    gaps = [later - earlier for earlier, later in zip(loop.starts, loop.starts[1:], strict=False)]
    assert all(gap >= wait * 0.9 for gap, wait in zip(gaps, [0.01, 0.02, 0.04, 0.04], strict=True))


def test_a_run_that_lasted_resets_the_backoff(caplog: pytest.LogCaptureFixture) -> None:
    # Given: three quick failures, then a run that lasts past reset_after_s before failing
    loop = Loop(["fail", "fail", "fail", 0.1, "fail"])

    async def body() -> None:
        task = asyncio.create_task(
            supervise("watchdog", loop, min_backoff_s=0.01, max_backoff_s=1.0, reset_after_s=0.05)
        )
        await _until(lambda: len(loop.starts) == 6)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # When
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _run(body)

    # Then: the wait grew while it failed at once, and started over after the long run
    waits = [r.restart_in_s for r in caplog.records if r.name == LOGGER]
    assert waits == [0.01, 0.02, 0.04, 0.01, 0.02]


def test_a_loop_that_returns_is_restarted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Given: a loop that returns once (these loops should run until cancelled)
    loop = Loop(["return"])

    async def body() -> None:
        task = asyncio.create_task(supervise("heartbeat", loop, min_backoff_s=0.01))
        await _until(lambda: len(loop.starts) == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # When
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _run(body)

    # Then
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, "background loop heartbeat stopped; restarting in 0.01 s")
    ]


@pytest.mark.parametrize("while_", ["running", "waiting to restart"])
def test_cancelling_stops_the_loop_for_good(while_: str, caplog: pytest.LogCaptureFixture) -> None:
    # Given: a supervised loop, either running or failed and waiting out its backoff
    loop = Loop(["run"] if while_ == "running" else ["fail"])

    async def body() -> None:
        task = asyncio.create_task(supervise("watchdog", loop, min_backoff_s=0.2))
        await _until(lambda: len(loop.starts) == 1)
        await asyncio.sleep(0.05)

        # When
        task.cancel()

        # Then: the supervisor ends cancelled and nothing runs again
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)
        assert len(loop.starts) == 1

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _run(body)

    # ...a running loop saw the cancellation; nothing was logged as a failure of it
    assert loop.cancelled == (while_ == "running")
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == (
        [] if while_ == "running" else [logging.ERROR]
    )


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (2.0, 1.0)])
def test_a_backoff_that_cannot_work_is_refused(low: float, high: float) -> None:
    async def body() -> None:
        with pytest.raises(ValueError, match="backoff"):
            await supervise("x", Loop([]), min_backoff_s=low, max_backoff_s=high)

    _run(body)
