"""How a tier worker runs LLM calls: one long-lived event loop per worker process.

Celery's threads pool gives each task a thread; every task hands its coroutine to this single
loop and waits for the result. One loop per process is what keeps LiteLLM's pooled async clients
valid (a fresh ``asyncio.run`` per task breaks them: litellm #9133, #7288), and it lets one
process hold hundreds of calls in flight while threads only wait. This module is the seam the
performance work replaces; callers only use :func:`run`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import CancelledError, Future
from typing import Any, TypeVar

from workers.cancellation import InFlight
from workers.errors import Cancelled, DeadlineExceeded, WorkerStopping
from workers.greenlets import await_, on_loop_greenlet

T = TypeVar("T")
logger = logging.getLogger(__name__)


class EventLoopThread:
    """A daemon thread running one asyncio loop that other threads submit coroutines to."""

    def __init__(self, name: str = "chordal-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._background: set[Future[Any]] = set()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop and return a thread-safe future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def start(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run ``coro`` in the background for the life of the loop.

        The loop holds its tasks only weakly: without the reference kept here, a long-lived
        task waiting on a socket can be garbage-collected mid-await.
        """
        future = self.submit(coro)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        future.add_done_callback(_log_failure)
        return future

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block the calling thread until it finishes."""
        future = self.submit(coro)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop's thread soon (asyncio objects are not thread-safe)."""
        self._loop.call_soon_threadsafe(callback)

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


def _log_failure(future: Future[Any]) -> None:
    # A background coroutine that fails is otherwise silent (its future is never awaited).
    if not future.cancelled() and (error := future.exception()) is not None:
        logger.error("a background task on the event loop failed", exc_info=error)


_lock = threading.Lock()
_shared: EventLoopThread | None = None
IN_FLIGHT = InFlight()
STOPPING = threading.Event()
"""Set once the worker shuts down: no new call starts, and those still running when the grace
runs out are stopped (:func:`stop_calls`) and their messages given back."""


def stop_calls() -> None:
    """Stop every call in flight on this process's loop (they raise WorkerStopping)."""
    STOPPING.set()
    loop = _shared
    if loop is None:
        return

    def cancel_all() -> None:
        for job_id in IN_FLIGHT.job_ids():
            IN_FLIGHT.cancel(job_id)

    loop.call_soon(cancel_all)


def shared_loop() -> EventLoopThread:
    """This process's loop, started on first use (thread and gevent pools skip process init)."""
    global _shared  # noqa: PLW0603 - one loop per process is the point of this module
    with _lock:
        if _shared is None:
            _shared = EventLoopThread()
        return _shared


def run(
    coro: Coroutine[Any, Any, T],
    *,
    timeout: float | None = None,
    job_id: str | None = None,
    bound_s: float | None = None,
) -> T:
    """Run ``coro`` on this process's shared loop from any thread.

    With ``job_id`` the call is tracked in :data:`IN_FLIGHT`, so cancelling the job stops it;
    it then raises :class:`~workers.errors.Cancelled`. With ``bound_s`` the coroutine is
    cancelled on the loop once it has run that long, and :class:`DeadlineExceeded` raised: the
    threads pool enforces no task time limit (celery #9203), so every call carries its own.

    On the loop pool (:mod:`workers.loop_pool`) the calling task's greenlet waits instead of a
    thread: the loop runs the call as a task of its own, so cancelling it leaves the greenlet's
    next waits alone.
    """
    tracked = coro if job_id is None and bound_s is None else _tracked(coro, job_id, bound_s)
    try:
        if on_loop_greenlet():
            bounded = tracked if timeout is None else asyncio.wait_for(tracked, timeout)
            return await_(asyncio.ensure_future(bounded))
        return shared_loop().run(tracked, timeout=timeout)
    except (CancelledError, asyncio.CancelledError):
        if job_id is None and bound_s is None:
            raise
        if STOPPING.is_set():
            raise WorkerStopping(f"the worker stopped a call of job {job_id}") from None
        raise Cancelled(f"job {job_id} was cancelled") from None


async def _tracked(coro: Coroutine[Any, Any, T], job_id: str | None, bound_s: float | None) -> T:
    task = asyncio.current_task()
    if task is not None and job_id is not None:
        IN_FLIGHT.track(job_id, task)
    if bound_s is None:
        return await coro
    bound = asyncio.timeout(max(bound_s, 0.0))
    try:
        async with bound:
            return await coro
    except TimeoutError:
        if not bound.expired():
            raise
        msg = f"stopped after {bound_s:.1f} s: past the task's time limit or deadline"
        raise DeadlineExceeded(msg) from None
