"""A Celery pool that runs every task on this process's event loop, in a greenlet of its own.

The threads pool gives each task in flight an OS thread that mostly waits for its LLM call on
the loop: at 500 calls in flight, 500 threads fight the loop's thread for the GIL, and each
holds a stack (docs/performance.md). Here a task runs as a greenlet on the loop's own thread:
Celery's tracer, the task body and its bookkeeping are the same synchronous code, and where the
task waits for a coroutine (:func:`workers.execution.run`) or sleeps, the greenlet hands the
coroutine to the loop and is resumed with its result. One thread does all the work; a task in
flight costs a greenlet (its saved stack slice) and an asyncio task, not a thread.

Celery's consumer keeps its role: it fetches, prefetches and applies messages on the main
thread; the tracer, on the loop's thread, stores the result, joins the chord and acknowledges,
as it does on the threads pool. The bridge is :mod:`workers.greenlets`.

What must not happen on this thread: a lock held while the task waits (the next greenlet that
takes it would block the only thread) and a plain ``time.sleep`` (use
:func:`workers.greenlets.sleep`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from celery.concurrency.base import BasePool, apply_target

from workers import execution
from workers.greenlets import run_in_greenlet

logger = logging.getLogger(__name__)
STOP_POLL_S = 0.1


class LoopPool(BasePool):  # type: ignore[misc]
    """Celery pool: each task a greenlet on the process's shared loop (see module doc)."""

    body_can_be_buffer = True
    signal_safe = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks: set[asyncio.Task[None]] = set()
        # Counted from the moment Celery applies a task (the main thread) to its end (the
        # loop's): a stop never finds the pool idle while a task is on its way to the loop.
        self._count_lock = threading.Lock()
        self._running = 0
        self._idle = threading.Event()
        self._idle.set()

    def on_start(self) -> None:
        self._loop = execution.shared_loop()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_: Any,
    ) -> None:
        with self._count_lock:
            self._running += 1
            self._idle.clear()
        run = partial(apply_target, target, args, kwargs, callback, accept_callback)
        self._loop.call_soon(partial(self._spawn, run))

    def _spawn(self, run: Callable[[], None]) -> None:
        # On the loop's thread. The set keeps each task referenced (the loop holds them weakly).
        task = asyncio.ensure_future(run_in_greenlet(run))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        with self._count_lock:
            self._running -= 1
            if not self._running:
                self._idle.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            # apply_target hands the task's own failures to Celery; this is the pool failing.
            logger.error("a task on the loop pool failed outside Celery's tracer", exc_info=error)

    def on_stop(self) -> None:
        # Celery's warm shutdown waits here for the tasks still running, as the threads pool
        # waits for its threads; the shutdown grace (agents/liveness.py) stops their calls.
        # Waited in slices so the main thread still runs a second signal's handler (a cold
        # shutdown) between them.
        while not self._idle.wait(STOP_POLL_S):
            pass

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super()._get_info()
        info.update({"max-concurrency": self.limit, "in-flight": self._running})
        return info
