"""Synchronous code that waits for coroutines: a greenlet per task on the event loop's thread.

:func:`run_in_greenlet` (on the loop) runs a plain function in a greenlet; where that function
calls :func:`await_`, the greenlet hands the awaitable to the loop and is resumed with its
result or its exception. This is the bridge SQLAlchemy's asyncio support is built on
(``greenlet_spawn``/``await_only``); SQLAlchemy keeps it internal, so these few lines are ours.
:mod:`workers.loop_pool` runs Celery tasks this way.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from greenlet import getcurrent, greenlet

T = TypeVar("T")


class _TaskGreenlet(greenlet):
    """A task's greenlet: what :func:`on_loop_greenlet` recognises."""


def on_loop_greenlet() -> bool:
    """Whether the caller runs as a task on the loop (and must not block its thread)."""
    return isinstance(getcurrent(), _TaskGreenlet)


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from a task's greenlet: the loop runs it and resumes the task."""
    current = getcurrent()
    if not isinstance(current, _TaskGreenlet):
        raise RuntimeError("await_ is only for tasks running on the loop pool")
    parent = current.parent
    assert parent is not None  # run_in_greenlet made it a child of the loop's greenlet
    result: T = parent.switch(awaitable)
    return result


def sleep(seconds: float) -> None:
    """Sleep without holding the loop's thread when called from a task on the loop."""
    if on_loop_greenlet():
        await_(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


async def run_in_greenlet(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a new greenlet; each awaitable it hands over is awaited here."""
    task = _TaskGreenlet(fn, getcurrent())
    value: Any = task.switch(*args)
    while not task.dead:
        try:
            outcome = await value
        except BaseException:
            value = task.throw(*sys.exc_info())
        else:
            value = task.switch(outcome)
    result: T = value
    return result
